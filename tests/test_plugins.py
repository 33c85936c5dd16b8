"""Formats and rank selectors are plug-ins: a new one is one class, registered, and every part of tuckerlab uses it.

The format and the selector below are written here, in the test, against the
public protocols only (:class:`tuckerlab.formats.Format`,
:class:`tuckerlab.rank.selectors.RankSelector`); nothing else in the package
knows them.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_data
from torch import nn

from tuckerlab import compress_model
from tuckerlab.formats import Format, get_format, register_format, unregister_format
from tuckerlab.layers import FactorizedConv2d
from tuckerlab.methods import admm_compress, lc_compress
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.rank.selectors import (
    RankSelector,
    SelectionContext,
    as_selector,
    format_for,
    register_selector,
    unregister_selector,
)
from tuckerlab.serialization import compression_of, load_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread_module")
FIT = dict(batch_size=16, device="cpu", progress=False)


# ------------------------------------------------------------- a toy format
class ChannelSVDConv2d(FactorizedConv2d):
    """Low rank of the ``(T, S Kh Kw)`` unfolding: a Kh x Kw conv to ``r`` channels, then a 1x1 conv to ``T``."""

    format_name = "channel_svd"

    def _build(self, rank, factory):
        kh, kw = self.kernel_size
        self.first = nn.Parameter(torch.empty(rank, self.in_channels, kh, kw, **factory))
        self.second = nn.Parameter(torch.empty(self.out_channels, rank, **factory))

    def reset_parameters(self):
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        self._init_chain((self.first, self.second), self.rank, 1.0 / (3 * fan_in))
        self._reset_bias(fan_in)

    @classmethod
    def _unpack(cls, decomposition):
        second, first = decomposition
        return first.shape[1], second.shape[0], tuple(first.shape[2:]), second.shape[1], {
            "first": first, "second": second}

    @property
    def rank(self) -> int:
        return int(self.second.shape[1])

    def reconstruct_weight(self):
        return torch.einsum("tr,rshw->tshw", self.second, self.first)

    def _forward_factorized(self, x):
        return F.conv2d(self._dense_conv_no_bias(x), self.second[:, :, None, None], self.bias)

    def _dense_conv_no_bias(self, x):
        x = self._pad(x, True, True)
        return F.conv2d(x, self.first, None, self.stride, self._conv_pad, self.dilation)

    @classmethod
    def cost(cls, weight_shape, rank, output_hw, input_hw=None, *, stride=1, bias=False):
        t, s, kh, kw = weight_shape
        ho, wo = output_hw
        return rank * (s * kh * kw + t) + (t if bias else 0), ho * wo * rank * (s * kh * kw + t)


class ChannelSVD(Format):
    name = "channel_svd"
    description = "toy: low rank of the (T, S Kh Kw) unfolding"
    kind = "conv"
    layer = ChannelSVDConv2d
    rank_doc = "r, an int"

    def normalize_rank(self, shape, rank):
        full = self.full_rank(shape)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
            raise ValueError(f"rank={rank!r}: must be an integer in [1, {full}]")
        return rank

    def full_rank(self, shape):
        return min(shape[0], math.prod(shape[1:]))

    def decompose(self, weight, rank, **options):
        t = weight.shape[0]
        u, s, vh = torch.linalg.svd(weight.reshape(t, -1), full_matrices=False)
        root = s[:rank].sqrt()
        return (u[:, :rank] * root, (root[:, None] * vh[:rank]).reshape(rank, *weight.shape[1:]))

    def reconstruct(self, decomposition):
        second, first = decomposition
        return torch.einsum("tr,rshw->tshw", second, first)

    def rank_of(self, decomposition):
        return int(decomposition[0].shape[1])


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register_format(ChannelSVD())
    register_selector("gradnorm", GradNormRanks, help="gradnorm:F")
    yield
    unregister_format("channel_svd")
    unregister_selector("gradnorm")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv3(torch.relu(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


def tiny():
    torch.manual_seed(0)
    return Tiny()


def test_a_registered_format_compresses_trains_saves_and_loads(tmp_path):
    data = tiny_data()
    x = torch.randn(2, 3, 8, 8)
    small, report = compress_model(tiny(), "channel_svd", 3, input_size=(3, 8, 8))
    assert isinstance(small.conv2, ChannelSVDConv2d) and small.conv2.rank == 3
    assert report.params_after == count_params(small) and report.macs_after == count_macs(small, (3, 8, 8))
    full, _ = compress_model(tiny(), "channel_svd", 16, skip=["conv2"], input_size=(3, 8, 8))
    torch.testing.assert_close(full.eval()(x), tiny().eval()(x), rtol=1e-4, atol=1e-5)  # exact at full rank

    lc = lc_compress(tiny(), data, format="channel_svd", rank=2, n_steps=1, lr=0.02, **FIT)
    assert lc.model.conv2.rank == 2 and lc.log[-1]["ranks"]["conv2"] == 2
    admm = admm_compress(tiny(), data, format="channel_svd", rank="2", epochs=1, rho=0.1, **FIT)
    assert isinstance(admm.model.conv3, ChannelSVDConv2d)

    from tuckerlab.models import get_model  # a saved model is rebuilt from a registered architecture

    torch.manual_seed(0)
    r20 = get_model("resnet20", num_classes=4)
    small, report = compress_model(r20, "channel_svd", 4)
    save_model(tmp_path / "r20.pt", small, arch="resnet20", num_classes=4, compression=compression_of(report))
    loaded, info = load_model(tmp_path / "r20.pt")
    assert info["compression"]["formats"]["layer1.0.conv1"] == "channel_svd"
    xs = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(xs), small.eval()(xs))


def test_format_without_rank_rules_says_so():
    with pytest.raises(ValueError, match="'channel_svd' has no error model for the budget solver"):
        compress_model(tiny(), "channel_svd", "params:0.5", input_size=(3, 8, 8))


# --------------------------------------------------- a selector that sees data
class GradNormRanks(RankSelector):
    """Ranks proportional to each layer's share of the loss-gradient norm on one training batch.

    Layer ``l`` gets ``f * n * g_l / sum(g)`` of its full rank (at most all
    of it), where ``g_l`` is the norm of the gradient of the loss with
    respect to its weight and ``n`` the number of layers.
    """

    name = "gradnorm"
    needs_data = True

    def __init__(self, arg=None):
        self.fraction = float(arg) if arg is not None else 0.5
        self.calls = 0

    def config(self):
        return {"selector": self.name, "fraction": self.fraction}

    def select(self, model, format, layers, context):
        self.calls += 1
        context.require_data(self.name)
        x, y = context.train_batch(32)
        model.zero_grad()
        was = model.training
        model.eval()
        F.cross_entropy(model(x), y).backward()
        model.train(was)
        norms = {info.name: float(info.module.weight.grad.norm()) for info in layers}
        model.zero_grad()
        total = sum(norms.values())
        out = {}
        for info in layers:
            fmt = format_for(info, format)
            share = min(1.0, self.fraction * len(norms) * norms[info.name] / total)
            out[info.name] = fmt.scale_rank(info.weight_shape, fmt.full_rank(info.weight_shape), share, 1)
        return out


def test_a_selector_that_needs_data_is_used_by_compress_lc_and_admm():
    data = tiny_data()
    selector = as_selector("gradnorm:0.5")
    assert isinstance(selector, GradNormRanks) and selector.fraction == 0.5
    small, report = compress_model(tiny(), "tucker2", selector, data=data, input_size=(3, 8, 8))
    ranks = {r.name: r.rank for r in report.rows}
    assert set(ranks) == {"conv2", "conv3"} and selector.calls == 1
    lc = lc_compress(tiny(), data, format="tucker2", rank="gradnorm:0.5", n_steps=1, lr=0.02, **FIT)
    admm = admm_compress(tiny(), data, format="tucker2", rank="gradnorm:0.5", epochs=1, rho=0.1, **FIT)
    # the same batch and weights: the same ranks, whoever asks
    assert lc.projector.ranks == admm.projector.ranks == ranks
    assert lc.rank_selection["rule"] == "gradnorm:0.5"


def test_a_selector_that_needs_data_refuses_to_run_without_it():
    with pytest.raises(ValueError, match="'gradnorm' looks at the data"):
        compress_model(tiny(), "tucker2", "gradnorm:0.5", input_size=(3, 8, 8))


def test_the_command_line_names_a_registered_selector(tmp_path):
    from tuckerlab.cli import main
    from tuckerlab.results import read_results

    fast = ["--no-progress", "--device", "cpu", "--max-steps-per-epoch", "2", "--batch-size", "32"]
    trained = tmp_path / "r20"
    assert main(["train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1", "--out", str(trained),
                 *fast]) == 0
    assert main(["lc", str(trained / "model.pt"), "--rank", "gradnorm:0.3", "--steps", "1", "--epochs-per-step",
                 "1", "--out", str(tmp_path / "lc"), *fast]) == 0
    results = read_results(tmp_path / "lc")
    assert results["results"]["rank_selection"]["selector"] == "gradnorm"
    assert results["provenance"]["rank"] == "gradnorm:0.3"


def test_selection_context_draws_training_images_only():
    data = tiny_data()
    x, y = SelectionContext(data=data, seed=3).train_batch(8)
    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32
    # drawn from the training split, normalised
    assert set(y.tolist()) <= set(data.y_train.tolist())
    again, _ = SelectionContext(data=data, seed=3).train_batch(8)
    torch.testing.assert_close(x, again)


def test_every_format_speaks_one_rank_convention():
    """The rank a format normalises is exactly its layer's .rank, argument and attribute alike."""
    conv = nn.Conv2d(8, 12, 3, padding=1)
    for name, rank in [("tucker2", 4), ("tt", 3), ("tt_tucker", ((6, 5), 3)), ("cp", 5)]:
        fmt = get_format(name)
        canonical = fmt.validate_rank(conv.weight.shape, rank)
        layer = fmt.layer.from_conv(conv, rank)
        assert layer.rank == canonical == fmt.rank_of(fmt.decompose(conv.weight, canonical)), name
        assert fmt.rank_from_json(fmt.rank_to_json(canonical)) == canonical
        again = fmt.layer.from_conv(conv, layer.rank)  # the .rank is a valid argument
        assert again.rank == layer.rank


def test_full_rank_tucker_factors_are_folded_into_the_core():
    fmt = get_format("tucker2")
    conv = nn.Conv2d(16, 64, 3, padding=1, bias=False)
    layer = fmt.layer.from_conv(conv, (64, 14))
    assert layer.factor_out is None and layer.factor_in.shape == (16, 14)
    assert layer.n_params == 16 * 14 + 64 * 14 * 9 == fmt.cost((64, 16, 3, 3), (64, 14))[0]
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.reconstruct_weight(), padding=1))
    tt_tucker = get_format("tt_tucker").layer.from_conv(conv, ((64, 16), (8, 12, 8)))
    assert tt_tucker.factor_out is None and tt_tucker.factor_in is None
    assert tt_tucker.n_params == get_format("tt_tucker").cost((64, 16, 3, 3), ((64, 16), (8, 12, 8)))[0]


def test_unknown_and_old_format_names():
    with pytest.raises(ValueError, match="format='tensor_train': must be one of 'tucker2'"):
        get_format("tensor_train")
    with pytest.warns(DeprecationWarning, match="write 'lowrank'"):
        assert get_format("svd", old_spellings=True).name == "lowrank"
    with pytest.raises(ValueError, match="already registered"):
        register_format(ChannelSVD())
