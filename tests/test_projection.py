"""The shared C-step: projection of a weight onto a format and rank, and of a whole model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tuckerlab.decompose import cp, tensor_train, tt_tucker, tucker
from tuckerlab.formats import HOOI_SWEEPS
from tuckerlab.layers import TuckerConv2d
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.projection import (
    FORMATS,
    LayerSpec,
    Projector,
    decompose_weight,
    project,
    project_model,
    reconstruct,
    to_factorized,
    validate_rank,
)
from tuckerlab.surgery import compress_model

RANKS = {
    "tucker2": (6, 5),
    "tucker": (6, 5, 2, 3),
    "tt": (4, 6, 5),
    "tt_tucker": ((6, 5), (3, 4, 5)),
    "cp": 7,
}
CONV_FORMATS = tuple(RANKS)


# small matrices: one thread is faster and steadier
pytestmark = pytest.mark.usefixtures("one_thread_module")


def weight(shape=(12, 8, 3, 3), dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def reference(w, format, rank):
    """The decomposition called directly, in the layers' layouts (HOOI capped as the formats cap it)."""
    if format == "tucker2":
        return tucker(w, rank, modes=(0, 1), n_iter_max=HOOI_SWEEPS).to_tensor()
    if format == "tucker":
        return tucker(w, rank, n_iter_max=HOOI_SWEEPS).to_tensor()
    if format == "tt":
        return tensor_train(w.permute(1, 2, 3, 0), rank).to_tensor().permute(3, 0, 1, 2)
    if format == "tt_tucker":
        (r_out, r_in), tt = rank
        return tt_tucker(w.permute(1, 2, 3, 0), (r_in, r_out), tt, modes=(0, 3),
                         n_iter_max=HOOI_SWEEPS).to_tensor().permute(3, 0, 1, 2)
    return cp(w, rank, random_state=0).to_tensor()


def truncated_svd(m, r):
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    return ((u[:, :r] * s[:r]) @ vh[:r]).to(m.dtype)


# --------------------------------------------------------------- one weight
@pytest.mark.parametrize("format", CONV_FORMATS)
def test_projection_equals_the_decomposition(format):
    w = weight()
    p = project(w, format, RANKS[format])
    torch.testing.assert_close(p, reference(w, format, RANKS[format]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reconstruct(decompose_weight(w, format, RANKS[format]), format), p)


def test_capped_hooi_error_is_within_a_tenth_of_a_percent_of_converged_hooi():
    # Random weights have flat spectra: the slowest case for HOOI.
    w = weight((64, 64, 3, 3))
    capped = float((project(w, "tucker2", (32, 32)) - w).norm())
    converged = float((project(w, "tucker2", (32, 32), n_iter_max=200, tol=1e-12) - w).norm())
    assert HOOI_SWEEPS <= 10
    assert converged <= capped <= 1.001 * converged


def test_warm_started_projection_matches_a_converged_one_and_skips_the_hosvd():
    w = {"a": weight((48, 40, 3, 3), seed=1), "b": weight((32, 24, 3, 3), seed=2)}
    proj = Projector({"a": ("tucker2", (20, 16)), "b": ("tucker2", (12, 10))})
    first = proj.decompose_tensors(w)
    warm = proj.warm_starts(first)
    assert set(warm) == {"a", "b"} and warm["a"]["rank"] == [20, 16]
    assert [tuple(f.shape) for f in warm["a"]["options"]["init"]] == [(48, 20), (40, 16)]
    # The weights move a little, as between two C-steps.
    moved = {n: t + 1e-2 * weight(t.shape, seed=9) for n, t in w.items()}
    again = proj.reconstruct(proj.decompose_tensors(moved, warm=warm), moved)
    best = {n: project(moved[n], "tucker2", proj[n].rank, n_iter_max=500, tol=1e-12) for n in moved}
    for n in moved:
        err, opt = float((again[n] - moved[n]).norm()), float((best[n] - moved[n]).norm())
        assert opt * (1 - 1e-6) <= err <= 1.0005 * opt, n
    # A changed rank starts afresh instead of from factors of the wrong shape.
    smaller = proj.with_ranks({"a": (10, 8)})
    assert smaller.decompose_tensors(moved, warm=warm)["a"].rank == (10, 8)
    # HOSVD has nothing to start; tucker refuses init with it.
    assert Projector({"a": ("tucker2", (20, 16), {"method": "hosvd"})}).warm_starts(first) == {}
    with pytest.raises(ValueError, match="init= starts HOOI"):
        tucker(w["a"], (20, 16), modes=(0, 1), method="hosvd", init=first["a"])
    with pytest.raises(ValueError, match=r"mode 1 has shape \(40, 16\): must be \(40, 8\)"):
        tucker(w["a"], (20, 8), modes=(0, 1), init=first["a"])


@pytest.mark.parametrize("shape", [(10, 24), (24, 10)])
def test_lowrank_is_the_truncated_svd(shape):
    w = weight(shape)
    torch.testing.assert_close(project(w, "lowrank", 4), truncated_svd(w, 4), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("format", ["tucker2", "tt", "tt_tucker", "lowrank"])
def test_projection_is_idempotent(format):
    w = weight((10, 24)) if format == "lowrank" else weight()
    rank = 4 if format == "lowrank" else RANKS[format]
    p = project(w, format, rank)
    torch.testing.assert_close(project(p, format, rank), p, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("format,rank", [
    ("tucker2", (12, 8)), ("tucker", (12, 8, 3, 3)), ("tt", (8, 24, 12)),
    ("tt_tucker", ((12, 8), (8, 24, 12))), ("lowrank", 10),
])
def test_full_rank_projection_is_the_identity(format, rank):
    w = weight((10, 24)) if format == "lowrank" else weight()
    torch.testing.assert_close(project(w, format, rank), w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("format", CONV_FORMATS)
def test_dtype_shape_and_layout_are_kept(format, dtype):
    w = weight(dtype=dtype).requires_grad_(dtype != torch.bfloat16)
    before = w.detach().clone()
    p = project(w, format, RANKS[format])
    assert p.shape == w.shape and p.dtype == dtype and p.device == w.device
    assert not p.requires_grad and p.grad_fn is None
    assert torch.equal(w.detach(), before)
    cl = weight(dtype=dtype).contiguous(memory_format=torch.channels_last)
    assert project(cl, format, RANKS[format]).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("format", CONV_FORMATS)
def test_projection_on_cuda_matches_cpu(format):
    w = weight()
    p = project(w.cuda(), format, RANKS[format])
    assert p.is_cuda
    if format != "cp":  # ALS may land elsewhere on another device
        torch.testing.assert_close(p.cpu(), project(w, format, RANKS[format]), rtol=1e-3, atol=1e-4)


def test_projection_of_a_larger_rank_is_closer():
    w = weight()
    errors = [torch.linalg.vector_norm(w - project(w, "tucker2", (r, r))).item() for r in (2, 4, 6, 8)]
    assert errors == sorted(errors, reverse=True)


# --------------------------------------------------------------- rank checks
def test_validate_rank_normalises_to_the_layers_form():
    assert set(FORMATS) == set(RANKS) | {"lowrank"}
    shape = (12, 8, 3, 3)
    assert validate_rank(shape, "tucker2", 4) == (4, 4)
    assert validate_rank(shape, "tt", (1, 4, 6, 5, 1)) == (4, 6, 5)
    assert validate_rank(shape, "tt", 100) == (8, 24, 12)
    assert validate_rank(shape, "tt_tucker", ((6, 5), 4)) == ((6, 5), (4, 4, 4))
    assert validate_rank((10, 24), "lowrank", 3) == 3


@pytest.mark.parametrize("format,rank,match", [
    ("tucker2", (13, 2), r"layer 'conv' \(format 'tucker2', weight shape \(12, 8, 3, 3\)\): rank\[0\]=13 .*\[1, 12\]"),
    ("tucker", (4, 4), r"format 'tucker'.*4 entries for modes \(0, 1, 2, 3\)"),
    ("tt", (9, 4, 4), r"layer 'conv' \(format 'tt'.*rank\[0\]=9 at bond 1.*\[1, 8\]"),
    ("tt_tucker", ((6, 5), (6, 4, 4)), r"format 'tt_tucker'.*tt_rank\[0\]=6 .*\[1, 5\]"),
    ("tt_tucker", (6, 5, 4), r"format 'tt_tucker'.*\(\(r_out, r_in\), \(r1, r2, r3\)\)"),
    ("cp", 0, r"format 'cp'.*rank=0 .*\[1, 72\]"),
    ("lowrank", 3, r"format 'lowrank' needs a 2-D linear weight"),
    ("nope", 3, r"format='nope': must be one of 'tucker2'"),
])
def test_bad_ranks_give_clear_errors(format, rank, match):
    with pytest.raises(ValueError, match=match):
        validate_rank((12, 8, 3, 3), format, rank, layer="conv")


def test_lowrank_rank_range_is_the_smaller_side():
    with pytest.raises(ValueError, match=r"rank=11 for mode 0 of size 10: must be an integer in \[1, 10\]"):
        project(weight((10, 24)), "lowrank", 11)


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match=r"unknown decomposition option\(s\) \['method'\]; accepted: none"):
        project(weight(), "tt", 4, method="hosvd")
    # options reach the decomposition
    torch.testing.assert_close(
        project(weight(), "tucker2", (4, 4), method="hosvd"),
        tucker(weight(), (4, 4), modes=(0, 1), method="hosvd").to_tensor(),
    )


# --------------------------------------------------------------- models
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.point = nn.Conv2d(16, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.dw(self.point(torch.relu(self.conv(torch.relu(self.stem(x))))))
        return self.fc(x.mean((2, 3)))


def net():
    torch.manual_seed(0)
    return Net()


def test_project_model_projects_every_named_layer():
    model = net()
    specs = {"conv": ("tucker2", (4, 3)), "fc": LayerSpec("lowrank", 3), "stem": ("tt", 2)}
    out = project_model(model, specs)
    assert list(out) == ["conv", "fc", "stem"]
    torch.testing.assert_close(out["conv"], project(model.conv.weight, "tucker2", (4, 3)))
    torch.testing.assert_close(out["fc"], project(model.fc.weight, "lowrank", 3))
    assert out["stem"].shape == model.stem.weight.shape


@pytest.mark.parametrize("specs,match", [
    ({"missing": ("tucker2", 2)}, r"layer 'missing': Net has no submodule"),
    ({"fc": ("tucker2", 2)}, r"layer 'fc' \(format 'tucker2'.*compresses nn.Conv2d layers, this is a Linear"),
    ({"conv": ("lowrank", 2)}, r"layer 'conv' .*'lowrank' compresses nn.Linear layers"),
    ({"dw": ("tucker2", 1)}, r"layer 'dw' .*groups=16"),
    ({"conv": ("tucker2", (17, 2))}, r"layer 'conv' \(format 'tucker2', weight shape \(16, 8, 3, 3\)\): rank\[0\]=17"),
    ({"conv": ("tensor_train", 2)}, r"format='tensor_train': must be one of"),
    ({"conv": ("cp", 2, {"bogus": 1})}, r"layer 'conv' .*unknown decomposition option"),
    ({}, r"specs is empty"),
])
def test_bad_specs_are_caught_before_any_decomposition(specs, match):
    with pytest.raises(ValueError, match=match):
        project_model(net(), specs)


def test_projector_round_trips_through_plain_values():
    proj = Projector({"conv": ("tt_tucker", ((4, 3), (2, 3, 2))), "fc": ("lowrank", 2)}, method="hosvd")
    assert proj["conv"].options == {"method": "hosvd"}
    again = Projector.from_dict(proj.to_dict())
    assert again.ranks == proj.ranks and again.to_dict() == proj.to_dict()
    assert proj.with_ranks({"fc": 1}).ranks["fc"] == 1


@pytest.mark.parametrize("format,rank", [
    ("tucker2", (4, 3)), ("tt", (3, 4, 5)), ("tt_tucker", ((5, 4), (3, 4, 3))), ("cp", 5),
])
def test_to_factorized_realises_the_projection(format, rank):
    model = net()
    specs = {"conv": (format, rank), "fc": ("lowrank", 3)}
    small, report = to_factorized(model, specs)
    targets = project_model(model, specs)
    conv = small.get_submodule("conv")
    assert conv.rank == validate_rank(model.conv.weight.shape, format, rank)
    torch.testing.assert_close(conv.reconstruct_weight().detach(), targets["conv"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(small.fc.reconstruct_weight().detach(), targets["fc"], rtol=1e-4, atol=1e-5)
    assert report.params_after == count_params(small)
    assert report.macs_after == count_macs(small, (3, 32, 32))
    assert {r.name: r.params_after for r in report.rows} == {"conv": conv.n_params, "fc": small.fc.n_params}
    assert isinstance(model.conv, nn.Conv2d)  # the input is not modified


def test_to_factorized_refuses_what_has_no_layer():
    with pytest.raises(ValueError, match="full Tucker"):
        to_factorized(net(), {"conv": ("tucker", (4, 3, 2, 2))})
    with pytest.raises(ValueError, match="one convolution format"):
        to_factorized(net(), {"conv": ("tucker2", 2), "stem": ("tt", 2)})


def test_from_rank_takes_compress_models_layer_choice():
    model = net()
    proj = Projector.from_rank(model, "tucker2", (2, 2), include_linear=False)
    _, report = compress_model(model, "tucker2", (2, 2))
    assert proj.names == [r.name for r in report.rows] == ["conv"]  # stem, 1x1, depthwise skipped
    proj = Projector.from_rank(model, "tucker2", lambda n, m, method: 2 if method == "lowrank" else (3, 2),
                               include_linear=True)
    assert proj.to_dict() == {
        "conv": {"format": "tucker2", "rank": [3, 2], "options": {}},
        "fc": {"format": "lowrank", "rank": 2, "options": {}},
    }
    small, _ = proj.to_factorized(model)
    assert isinstance(small.conv, TuckerConv2d)
