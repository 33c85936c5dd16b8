"""Factorized layers: full rank reproduces the dense conv, for every layout and conv setting."""

import copy
import math

import pytest
import torch
from torch import nn

from tuckerlab.layers import (
    CPConv2d,
    FactorizedModule,
    LowRankLinear,
    TTConv2d,
    TTTuckerConv2d,
    TuckerConv2d,
    conv2d_cost,
    set_execution,
)
from tuckerlab.metrics import count_macs

# torch's own 'same' conv with an even kernel warns that it pads a copy of the input
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

S, T = 4, 6  # in / out channels of the test convs
CP_RANK = 3  # planted CP rank of the CP test weights
HW = (9, 10)  # input height, width
CP_KWARGS = dict(n_iter_max=60, tol=1e-14, random_state=0)  # full-rank tests: ALS to ~1e-8
FAST_KWARGS = {"tucker2": dict(method="hosvd"), "tt_tucker": dict(method="hosvd"), "cp": dict(n_iter_max=5)}
LOW_RANK = {"tucker2": (3, 2), "tt": (2, 2, 2), "tt_tucker": ((3, 2), (2, 2, 2)), "cp": 2}


@pytest.fixture(autouse=True, scope="module")
def _memoize_cp():
    """Run ALS once per distinct weight: many tests decompose the same planted weight."""
    import tuckerlab.decompose as dec

    original, memo = dec.cp, {}

    def cp(tensor, rank, **kwargs):
        key = (tensor.detach().cpu().numpy().tobytes(), tuple(tensor.shape), rank, tuple(sorted(kwargs.items())))
        if key not in memo:
            memo[key] = original(tensor, rank, **kwargs)
        return memo[key]

    dec.cp = cp
    yield
    dec.cp = original


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm())


def _tt_full(s, kh, kw, t):
    return (min(s, kh * kw * t), min(s * kh, kw * t), min(s * kh * kw, t))


def full_rank(kind, conv):
    t, s, kh, kw = conv.weight.shape
    if kind == "tucker2":
        return (t, s)
    if kind == "tt":
        return _tt_full(s, kh, kw, t)
    if kind == "tt_tucker":
        return ((t, s), _tt_full(s, kh, kw, t))
    return CP_RANK


LAYERS = {"tucker2": TuckerConv2d, "tt": TTConv2d, "tt_tucker": TTTuckerConv2d, "cp": CPConv2d}

# (kernel_size, stride, padding, dilation, padding_mode)
CONFIGS = {
    "k3": (3, 1, 1, 1, "zeros"),
    "k3-s2": (3, 2, 1, 1, "zeros"),
    "k3-s(2,1)-p(1,0)": (3, (2, 1), (1, 0), 1, "zeros"),
    "k(3,5)-s(1,2)-p(2,1)-d(2,1)": ((3, 5), (1, 2), (2, 1), (2, 1), "zeros"),
    "k(2,4)-same": ((2, 4), 1, "same", 1, "zeros"),
    "k3-valid-d2": (3, 1, "valid", 2, "zeros"),
    "k3-s(1,2)-reflect": (3, (1, 2), 1, 1, "reflect"),
    "k3-p(1,2)-circular": (3, 1, (1, 2), 1, "circular"),
    "k1": (1, 1, 0, 1, "zeros"),
    "k1-s2": (1, 2, 0, 1, "zeros"),
}


def make_conv(kind, config, bias, seed=0):
    kernel, stride, padding, dilation, mode = CONFIGS[config]
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(
        S, T, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias, padding_mode=mode,
        dtype=torch.float64,
    )
    with torch.no_grad():
        if kind == "cp":
            t, s, kh, kw = conv.weight.shape
            factors = [torch.randn(d, CP_RANK, generator=g, dtype=torch.float64) for d in (t, s, kh, kw)]
            conv.weight.copy_(torch.einsum("tr,sr,hr,wr->tshw", *factors))
        else:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
        if bias:
            conv.bias.copy_(torch.randn(T, generator=g, dtype=torch.float64))
    return conv


def decompose_kwargs(kind):
    return CP_KWARGS if kind == "cp" else {}


_CACHE = {}


def full_rank_layer(kind, config, bias):
    """(conv, factorized layer at full rank), built once per key (CP is slow)."""
    key = (kind, config, bias)
    if key not in _CACHE:
        conv = make_conv(kind, config, bias)
        layer = LAYERS[kind].from_conv(conv, full_rank(kind, conv), **decompose_kwargs(kind))
        _CACHE[key] = (conv, layer)
    conv, layer = _CACHE[key]
    return conv, copy.deepcopy(layer)


def make_input(seed=1):
    return torch.randn(2, S, *HW, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("execution", ["factorized", "reconstructed"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_full_rank_equals_conv(kind, execution, config, bias):
    conv, layer = full_rank_layer(kind, config, bias)
    layer.execution = execution
    x = make_input()
    y, y_ref = layer(x), conv(x)
    assert y.shape == y_ref.shape
    assert _rel(y, y_ref) < 1e-5


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", list(LAYERS))
def test_execution_modes_agree_at_low_rank(kind, config):
    conv = make_conv("tucker2", config, bias=True, seed=3)
    layer = LAYERS[kind].from_conv(conv, LOW_RANK[kind], **FAST_KWARGS.get(kind, {}))
    x = make_input()
    y_fact = layer(x)
    layer.execution = "reconstructed"
    assert _rel(layer(x), y_fact) < 1e-10
    assert _rel(layer.to_conv()(x), y_fact) < 1e-10


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", list(LAYERS))
def test_to_conv_round_trip(kind, config):
    conv, layer = full_rank_layer(kind, config, True)
    dense = layer.to_conv()
    assert isinstance(dense, nn.Conv2d)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode"):
        assert getattr(dense, attr) == getattr(conv, attr), attr
    assert dense.weight.dtype == torch.float64
    assert _rel(dense.weight, conv.weight) < 1e-5
    assert torch.equal(dense.bias, conv.bias)
    x = make_input()
    assert _rel(dense(x), layer(x)) < 1e-10
    # no parameter is shared with the factorized layer
    with torch.no_grad():
        dense.bias.zero_()
    assert layer.bias.abs().sum() > 0
    # and the dense conv compresses back to the same function (CP: same ALS path as above)
    if kind != "cp":
        again = type(layer).from_conv(dense, layer.rank)
        assert _rel(again(x), dense(x)) < 1e-5


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", list(LAYERS))
def test_n_params_and_cost(kind, config):
    bias = list(CONFIGS).index(config) % 2 == 0
    conv = make_conv("tucker2", config, bias, seed=4)
    rank = LOW_RANK[kind]
    layer = LAYERS[kind].from_conv(conv, rank, **FAST_KWARGS.get(kind, {}))
    assert layer.rank == rank
    assert layer.n_params == sum(p.numel() for p in layer.parameters())
    with torch.no_grad():
        out_hw = tuple(conv(make_input()).shape[-2:])
    params, macs = LAYERS[kind].cost(conv.weight.shape, rank, out_hw, HW, bias=bias)
    assert params == layer.n_params
    assert macs == count_macs(layer, (S, *HW))
    dense_params, dense_macs = conv2d_cost(conv.weight.shape, out_hw, bias=bias)
    assert dense_params == sum(p.numel() for p in conv.parameters())
    assert dense_macs == count_macs(conv, (S, *HW))


def test_cost_infers_input_size_from_stride():
    shape, rank = (16, 8, 3, 3), (4, 4)
    assert TuckerConv2d.cost(shape, rank, (8, 8), stride=2) == TuckerConv2d.cost(shape, rank, (8, 8), (16, 16))
    assert TuckerConv2d.cost(shape, rank, (8, 8)) == TuckerConv2d.cost(shape, rank, (8, 8), (8, 8))
    # an int TT rank is a cap per bond, as in tensor_train
    assert TTConv2d.cost(shape, 1000, (8, 8)) == TTConv2d.cost(shape, (8, 24, 16), (8, 8))


@pytest.mark.parametrize("execution", ["factorized", "reconstructed"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_gradients_reach_factors(kind, execution):
    conv = make_conv("tucker2", "k3-s(2,1)-p(1,0)", bias=True, seed=5)
    layer = LAYERS[kind].from_conv(conv, LOW_RANK[kind], execution=execution, **FAST_KWARGS.get(kind, {}))
    params = list(layer.parameters())
    assert params and all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
    layer(make_input()).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fine_tuning_step_changes_output():
    conv = make_conv("tucker2", "k3", bias=False, seed=6)
    layer = TuckerConv2d.from_conv(conv, (3, 2), method="hosvd")
    opt = torch.optim.SGD(layer.parameters(), lr=1e-2)
    x = make_input()
    target = conv(x).detach()
    before = float((layer(x) - target).square().mean().detach())
    for _ in range(3):
        opt.zero_grad()
        (layer(x) - target).square().mean().backward()
        opt.step()
    assert float((layer(x) - target).square().mean().detach()) < before


@pytest.mark.parametrize("kind", list(LAYERS))
def test_grouped_conv_is_refused(kind):
    conv = nn.Conv2d(4, 6, 3, groups=2)
    with pytest.raises(ValueError, match=r"groups=1.*groups=2"):
        LAYERS[kind].from_conv(conv, full_rank(kind, make_conv(kind, "k3", False)))
    with pytest.raises(ValueError, match="groups=2"):
        LAYERS[kind](4, 6, 3, full_rank(kind, make_conv(kind, "k3", False)), groups=2)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_non_conv_is_refused(kind):
    with pytest.raises(TypeError, match=r"expects a torch.nn.Conv2d, got Linear"):
        LAYERS[kind].from_conv(nn.Linear(4, 6), 2)
    with pytest.raises(TypeError, match="got Conv1d"):
        LAYERS[kind].from_conv(nn.Conv1d(4, 6, 3), 2)


@pytest.mark.parametrize(
    "kind, rank, match",
    [
        ("tucker2", (7, 4), r"rank\[0\]=7 for mode 0 of size 6"),
        ("tucker2", (6, 5), r"rank\[1\]=5 for mode 1 of size 4"),
        ("tt", (5, 12, 6), r"rank\[0\]=5 at bond 1"),
        ("tt_tucker", ((6, 4), (4, 13, 6)), r"bond 2"),
        ("cp", 10**6, r"rank=1000000"),
    ],
)
def test_rank_too_large_raises_from_decompose(kind, rank, match):
    conv = make_conv("tucker2", "k3", bias=False)
    with pytest.raises(ValueError, match=match):
        LAYERS[kind].from_conv(conv, rank)


def test_execution_is_checked_and_switchable():
    conv = make_conv("tucker2", "k3", bias=True)
    with pytest.raises(ValueError, match=r"execution.*'factorized', 'reconstructed'.*'dense'"):
        TuckerConv2d.from_conv(conv, (3, 2), execution="dense")
    layer = TuckerConv2d.from_conv(conv, (3, 2), method="hosvd")
    with pytest.raises(ValueError, match="execution"):
        layer.execution = "fast"
    model = nn.Sequential(layer, nn.ReLU(), TTConv2d(T, S, 3, 2, padding=1, dtype=torch.float64))
    assert set_execution(model, "reconstructed") is model
    assert all(m.execution == "reconstructed" for m in model.modules() if isinstance(m, FactorizedModule))
    with pytest.raises(ValueError, match="execution"):
        set_execution(model, "fast")


@pytest.mark.parametrize("kind", list(LAYERS))
def test_constructor_and_from_factors(kind):
    rank = LOW_RANK[kind]
    torch.manual_seed(0)  # the init draws from the global generator: products of factors are heavy-tailed
    layer = LAYERS[kind](S, T, 3, rank, stride=2, padding=1, dtype=torch.float64)
    assert layer.rank == rank
    x = make_input()
    y = layer(x)
    assert y.shape == (2, T, 5, 5)
    # default init: the rebuilt weight has about the scale of nn.Conv2d's default init
    std = float(layer.reconstruct_weight().detach().std())
    assert 0.02 < std < 1.0
    # rebuilding from the stored factors gives the same layer
    if kind == "tucker2":
        factors = (layer.core, (layer.factor_out, layer.factor_in))
    elif kind == "tt":
        factors = list(layer.cores)
    elif kind == "tt_tucker":
        factors = ((layer.factor_out, layer.factor_in), list(layer.cores))
    else:
        factors = (None, (layer.factor_out, layer.factor_in, layer.factor_h, layer.factor_w))
    twin = LAYERS[kind].from_factors(factors, stride=2, padding=1, bias=layer.bias)
    assert _rel(twin(x), y) < 1e-12


def test_tt_rank_from_eps_and_dtype_kept():
    conv = nn.Conv2d(S, T, 3, padding=1)  # float32
    layer = TTConv2d.from_conv(conv, eps=1e-6)
    assert layer.rank == _tt_full(S, 3, 3, T)
    assert all(p.dtype == torch.float32 for p in layer.parameters())
    x = torch.randn(1, S, 8, 8)
    assert _rel(layer(x), conv(x)) < 1e-4


def test_repr_mentions_rank_and_execution():
    layer = TuckerConv2d(S, T, 3, (3, 2), stride=(2, 1), padding=1)
    text = repr(layer)
    assert "rank=(3, 2)" in text and "execution='factorized'" in text and "stride=(2, 1)" in text


# --------------------------------------------------------------- linear
def make_linear(bias=True, seed=0, out_f=7, in_f=5):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f, generator=g, dtype=torch.float64))
    return lin


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("execution", ["factorized", "reconstructed"])
def test_low_rank_linear_full_rank(execution, bias):
    lin = make_linear(bias)
    layer = LowRankLinear.from_linear(lin, 5, execution=execution)
    x = torch.randn(3, 5, dtype=torch.float64)
    assert _rel(layer(x), lin(x)) < 1e-10
    back = layer.to_linear()
    assert isinstance(back, nn.Linear) and (back.bias is None) == (not bias)
    assert _rel(back.weight, lin.weight) < 1e-10
    assert layer.n_params == sum(p.numel() for p in layer.parameters())
    assert LowRankLinear.cost(lin.weight.shape, 5, bias=bias)[0] == layer.n_params
    layer.execution = "factorized"  # cost() describes factorized execution
    assert LowRankLinear.cost(lin.weight.shape, 5)[1] == count_macs(layer, (5,))


def test_low_rank_linear_truncation_is_best_and_modes_agree():
    lin = make_linear()
    layer = LowRankLinear.from_linear(lin, 2)
    s = torch.linalg.svdvals(lin.weight.detach())
    err = float((layer.reconstruct_weight() - lin.weight).detach().norm())
    assert math.isclose(err, float(s[2:].norm()), rel_tol=1e-10)
    x = torch.randn(3, 5, dtype=torch.float64)
    y = layer(x)
    layer.execution = "reconstructed"
    assert _rel(layer(x), y) < 1e-12
    layer(x).sum().backward()
    assert layer.factor_in.grad is not None and layer.factor_out.grad is not None


def test_low_rank_linear_bad_inputs():
    with pytest.raises(ValueError, match=r"\[1, 5\].*got 6"):
        LowRankLinear.from_linear(make_linear(), 6)
    with pytest.raises(TypeError, match="expects a torch.nn.Linear, got Conv2d"):
        LowRankLinear.from_linear(nn.Conv2d(3, 3, 3), 2)
