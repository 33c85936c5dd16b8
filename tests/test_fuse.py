"""Inference rewrites (BatchNorm folding, 1x1 merging) keep the model's function."""
import copy

import pytest
import torch
from torch import nn

from tuckerlab.fuse import fold_batchnorm, fuse_for_inference, merge_pointwise
from tuckerlab.layers import CPConv2d, TTConv2d, TTTuckerConv2d, TuckerConv2d, set_execution
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.models import get_model
from tuckerlab.surgery import compress_model

pytestmark = pytest.mark.usefixtures("one_thread_module")

ATOL = 1e-5
RANKS = {"tucker2": (6, 5), "tt": (5, 6, 5), "tt_tucker": ((8, 6), (5, 6, 6)), "cp": 12}


def _random_bn(model):
    """BatchNorm statistics and affine parameters far from the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                if m.affine:
                    m.weight.normal_(1, 0.5)
                    m.bias.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return _random_bn(get_model("resnet20")).eval()


def _close(a, b):
    return float((a - b).abs().max()) <= ATOL


# Few ALS/HOOI sweeps: the tests compare a model with its rewrite, not with the dense model.
FAST = {"tucker2": {"n_iter_max": 2}, "cp": {"n_iter_max": 3}}


@pytest.fixture(scope="module")
def compressed(resnet20):
    """``compressed(method)``: ResNet-20 compressed with that method (built once per module)."""
    built = {}

    def make(method):
        if method not in built:
            built[method] = compress_model(resnet20, method, RANKS[method], decompose_kwargs=FAST.get(method))[0]
        return copy.deepcopy(built[method])

    return make


@pytest.mark.parametrize("execution", ["factorized", "reconstructed"])
@pytest.mark.parametrize("method", [None, *RANKS])
def test_fused_resnet20_computes_the_same(resnet20, compressed, method, execution):
    model = copy.deepcopy(resnet20) if method is None else set_execution(compressed(method), execution)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        fused = fuse_for_inference(model)
        got = fused(x)
    assert _close(got, expected)
    assert not fused.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())  # every BN follows a conv
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 19  # the input is untouched
    assert count_macs(fused) <= count_macs(model)


def test_tt_tucker_becomes_tt_with_fewer_macs(compressed):
    model = compressed("tt_tucker")
    before = {n: m.rank for n, m in model.named_modules() if isinstance(m, TTTuckerConv2d)}
    merged = merge_pointwise(model)
    assert sorted(merged) == sorted(before)
    after = dict(model.named_modules())
    for name, (_, tt_rank) in before.items():
        assert isinstance(after[name], TTConv2d) and after[name].rank == tt_rank
    x = torch.randn(2, 3, 32, 32)
    original = compressed("tt_tucker")
    with torch.no_grad():
        assert _close(model.eval()(x), original.eval()(x))
    assert count_macs(model) < count_macs(original) and count_params(model) < count_params(original)


@pytest.mark.parametrize("layer", ["dense", "dense_bias", "tucker2", "tucker2_square_out", "tt", "tt_tucker_square",
                                   "cp"])
def test_fold_into_each_layer_type(layer):
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 8, 3, padding=1, bias=layer == "dense_bias")
    make = {"tucker2": lambda: TuckerConv2d.from_conv(conv, (4, 3)), "tt": lambda: TTConv2d.from_conv(conv, (3, 4, 3)),
            "cp": lambda: CPConv2d.from_conv(conv, 5),
            # full-rank channel modes: the square factors live in the cores
            "tucker2_square_out": lambda: TuckerConv2d.from_conv(conv, (8, 3)),
            "tt_tucker_square": lambda: TTTuckerConv2d.from_conv(conv, ((8, 6), (3, 4, 3)))}
    first = make[layer]() if layer in make else conv
    bn = nn.BatchNorm2d(8, affine=layer != "cp")  # CP: BatchNorm without affine parameters
    model = _random_bn(nn.Sequential(first, bn, nn.ReLU())).eval()
    x = torch.randn(2, 6, 7, 7)
    expected = model(x).detach()
    assert fold_batchnorm(model) == [("0", "1")]
    assert isinstance(model[1], nn.Identity) and model[0].bias is not None
    assert _close(model(x).detach(), expected)


class _Branching(nn.Module):
    """conv1's output feeds its BatchNorm and a second path: folding would change the second path."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv1(x)
        return self.bn1(y) + y + self.bn2(self.conv2(x)) + self.conv2(x)


def test_only_exact_folds_are_made():
    model = _random_bn(_Branching()).eval()
    x = torch.randn(2, 4, 6, 6)
    expected = model(x).detach()
    assert fold_batchnorm(model) == []  # conv1 output reused, conv2 called twice
    assert _close(model(x).detach(), expected)
    training = _random_bn(nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))  # BN in training mode
    assert fold_batchnorm(training) == []


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x)) if x.sum() > 0 else x


def test_untraceable_model_is_reported():
    with pytest.raises(ValueError, match="cannot be traced by torch.fx"):
        fuse_for_inference(_DataDependent())


def test_inplace(compressed):
    model = compressed("tucker2")
    model.train()
    same = fuse_for_inference(model, inplace=True)
    assert same is model and not model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
