"""Rank selection: EVBMF against hand-derived cases, rank rules, the budget solver, Bayesian optimisation."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from torch import nn

from tuckerlab.models import get_model
from tuckerlab.rank import (
    bayesopt_global_factor,
    bayesopt_ranks,
    energy_rank,
    energy_rule,
    evb_tau,
    evbmf,
    evbmf_rank,
    evbmf_rule,
    fixed_ratio,
    fixed_ratio_rank,
    solve_budget,
)


# the matrices here are small: one thread is faster and steadier
pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return get_model("resnet20")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _orth(n, r, g):
    return torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))[0]


def _with_singular_values(L, M, s, g):
    """An L x M matrix with the given leading singular values and zeros after."""
    r = len(s)
    return _orth(L, r, g) @ torch.diag(torch.as_tensor(s, dtype=torch.float64)) @ _orth(M, r, g).T


def _phi(z):
    return math.log1p(z) / z - 0.5


def _tau_ref(alpha):
    return brentq(lambda t: _phi(t) + _phi(t / alpha), 1e-9, 1e9, xtol=1e-14)


# ------------------------------------------------------------------- EVBMF
@pytest.mark.parametrize("shape", [(100, 200), (200, 100)])
def test_pure_noise_has_rank_zero(shape):
    y = torch.randn(*shape, generator=_gen(1), dtype=torch.float64)
    res = evbmf(y)
    assert res.rank == 0
    assert res.shrunk_singular_values.numel() == 0
    assert res.sigma2 == pytest.approx(1.0, rel=0.05)
    # the largest singular value of noise sits near sqrt(L) + sqrt(M) (Marchenko-Pastur edge),
    # below the EVB threshold
    assert float(res.singular_values[0]) < res.threshold


@pytest.mark.parametrize("rank", [1, 3, 10])
@pytest.mark.parametrize("shape", [(60, 150), (150, 60)])
def test_planted_rank_is_recovered(rank, shape):
    g = _gen(rank)
    L, M = shape
    sigma = 0.1
    s = np.linspace(4.0, 2.0, rank) * sigma * (math.sqrt(L) + math.sqrt(M))  # >= 2x the noise edge
    y = _with_singular_values(L, M, s, g) + sigma * torch.randn(L, M, generator=g, dtype=torch.float64)
    assert evbmf(y).rank == rank
    assert evbmf(y.float()).rank == rank


def test_tau_is_the_papers_root():
    assert evb_tau(1.0) == pytest.approx(2.5129, abs=1e-4)
    for alpha in (0.5, 0.1, 0.01):
        assert evb_tau(alpha) == pytest.approx(_tau_ref(alpha), rel=1e-9)
        # 2.5129 sqrt(alpha) is a close approximation of the threshold factor
        t, ta = evb_tau(alpha), 2.5129 * math.sqrt(alpha)
        ratio = math.sqrt((1 + t) * (1 + alpha / t) / ((1 + ta) * (1 + alpha / ta)))
        assert 1.0 <= ratio < 1.011


@pytest.mark.parametrize("shape", [(40, 90), (90, 40)])
def test_threshold_formula_for_given_sigma2(shape):
    L, M = sorted(shape)
    sigma2 = 0.3
    alpha = L / M
    tau = _tau_ref(alpha)
    threshold = math.sqrt(M * sigma2 * (1 + tau) * (1 + alpha / tau))
    y = _with_singular_values(*shape, [1.5 * threshold, 1.01 * threshold, 0.99 * threshold, 0.5 * threshold], _gen(3))
    res = evbmf(y, sigma2=sigma2)
    assert res.threshold == pytest.approx(threshold, rel=1e-9)
    assert res.rank == 2
    assert res.sigma2 == sigma2 and res.sigma2_bounds is None
    assert evbmf(y, sigma2=sigma2, max_rank=1).rank == 1


def test_sigma2_estimate_is_close_to_the_noise_variance():
    g = _gen(4)
    L, M, sigma2 = 200, 300, 0.25
    s = [60.0, 50.0, 40.0, 30.0, 25.0]
    y = _with_singular_values(L, M, s, g) + math.sqrt(sigma2) * torch.randn(L, M, generator=g, dtype=torch.float64)
    res = evbmf(y)
    assert res.rank == 5
    assert res.sigma2 == pytest.approx(sigma2, rel=0.03)
    lo, hi = res.sigma2_bounds
    assert lo <= res.sigma2 <= hi


def test_shrinkage_matches_the_closed_form():
    g = _gen(5)
    L, M = 50, 120
    y = _with_singular_values(L, M, [40.0, 25.0, 15.0], g) + 0.5 * torch.randn(L, M, generator=g, dtype=torch.float64)
    res = evbmf(y, factors=True)
    assert res.rank == 3
    alpha, s2 = L / M, res.sigma2
    for gamma, d in zip(res.singular_values[:3].tolist(), res.shrunk_singular_values.tolist()):
        x = gamma**2 / (M * s2)
        # tau(x): the larger root of (1 + tau)(1 + alpha / tau) = x; then d = M sigma2 tau / gamma
        tau = brentq(lambda t: (1 + t) * (1 + alpha / t) - x, math.sqrt(alpha), x)
        assert d == pytest.approx(M * s2 * tau / gamma, rel=1e-8)
        q = 1 - (L + M) * s2 / gamma**2
        assert d == pytest.approx(gamma / 2 * (q + math.sqrt(q * q - 4 * L * M * s2**2 / gamma**4)), rel=1e-12)
        assert 0 < d < gamma
    # the shrunk estimate is a matrix of the input's shape, orientation kept
    assert res.reconstruct().shape == (L, M)
    assert evbmf(y.T, factors=True).reconstruct().shape == (M, L)


def test_degenerate_matrices():
    zero = evbmf(torch.zeros(20, 30))
    assert zero.rank == 0 and zero.sigma2 == 0.0 and not math.isnan(zero.threshold)
    rank_one = torch.outer(torch.arange(1.0, 9.0), torch.arange(1.0, 14.0))
    res = evbmf(rank_one)
    assert res.rank == 1 and math.isfinite(res.sigma2)
    for v in (torch.randn(1, 12), torch.randn(12, 1), torch.ones(1, 1)):
        res = evbmf(v)
        assert res.rank == 0 and math.isfinite(res.sigma2)
    assert evbmf(torch.ones(5, 7, dtype=torch.int64)).rank == 1


@pytest.mark.parametrize("bad", [[[1.0, 2.0]], np.ones((3, 3)), torch.ones(3), torch.ones(2, 3, 4), torch.ones(0, 3)])
def test_evbmf_rejects_non_matrices(bad):
    with pytest.raises((TypeError, ValueError), match="matrix"):
        evbmf(bad)


def test_evbmf_error_names_the_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        evbmf(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="NaN"):
        evbmf(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="sigma2"):
        evbmf(torch.ones(3, 3), sigma2=-1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evbmf_on_gpu():
    g = _gen(6)
    y = _with_singular_values(80, 50, [30.0, 20.0], g) + 0.3 * torch.randn(80, 50, generator=g, dtype=torch.float64)
    cpu = evbmf(y.float())
    gpu = evbmf(y.float().cuda(), factors=True)
    assert gpu.rank == cpu.rank == 2
    assert gpu.singular_values.is_cuda and gpu.U.is_cuda
    assert gpu.sigma2 == pytest.approx(cpu.sigma2, rel=1e-3)


# -------------------------------------------------------------- rank rules
def _tucker2_weight(t, s, r_out, r_in, g, noise=1e-3):
    w = torch.einsum("ta,sb,abhw->tshw", _orth(t, r_out, g), _orth(s, r_in, g),
                     torch.randn(r_out, r_in, 3, 3, generator=g, dtype=torch.float64))
    return (w + noise * torch.randn(w.shape, generator=g, dtype=torch.float64)).float()


def test_evbmf_rank_recovers_planted_ranks():
    g = _gen(7)
    w = _tucker2_weight(48, 32, 7, 5, g)
    assert evbmf_rank(w, "tucker2") == (7, 5)
    assert evbmf_rank(w, "cp") == 7
    assert evbmf_rank(w.reshape(48, -1), "svd") == 7
    # TT: cores (S, r1) (r1, Kh, r2) (r2, Kw, r3) (r3, T), weight permuted to (S, Kh, Kw, T)
    cores = [torch.randn(16, 3, generator=g), torch.randn(3, 3, 4, generator=g), torch.randn(4, 3, 5, generator=g),
             torch.randn(5, 32, generator=g)]
    x = torch.einsum("sa,ahb,bwc,ct->shwt", *cores)
    x = x / x.std() + 1e-3 * torch.randn(x.shape, generator=g)
    assert evbmf_rank(x.permute(3, 0, 1, 2), "tt") == (3, 4, 5)
    (tucker, tt) = evbmf_rank(w, "tt_tucker")
    assert tucker == (7, 5) and tt[0] <= 5 and tt[2] <= 7


def test_weakening_and_min_rank():
    w = _tucker2_weight(48, 32, 7, 5, _gen(8))
    assert evbmf_rank(w, weakening=0.0) == (48, 32)
    assert evbmf_rank(w, weakening=0.5) == (round(48 - 0.5 * 41), round(32 - 0.5 * 27))
    assert evbmf_rank(w, min_rank=6) == (7, 6)
    assert evbmf_rank(w, min_rank=100) == (48, 32)  # never above the dimension
    with pytest.raises(ValueError, match="weakening"):
        evbmf_rank(w, weakening=1.5)


def test_evbmf_ranks_of_an_initialised_resnet20_are_minimal(resnet20):
    # i.i.d. (Kaiming) weights are pure noise to EVBMF: rank 0, raised to min_rank
    rule = evbmf_rule()
    convs = [(n, m) for n, m in resnet20.named_modules() if isinstance(m, nn.Conv2d)]
    assert all(rule(n, m, "tucker2") == (1, 1) for n, m in convs)
    assert rule("fc", resnet20.fc, "svd") == 1


def test_energy_rank_by_hand():
    m = _with_singular_values(6, 9, [3.0, 2.0, 1.0], _gen(9)).float()  # energies 9, 4, 1 of 14
    assert energy_rank(m, "svd", 0.6) == 1
    assert energy_rank(m, "svd", 0.9) == 2
    assert energy_rank(m, "svd", 0.95) == 3
    assert energy_rank(m, "svd", 1.0) == 3
    w = _tucker2_weight(48, 32, 7, 5, _gen(10), noise=0.0)
    assert energy_rank(w, "tucker2", 1.0) == (7, 5)


@pytest.mark.parametrize("energy", [0, -0.1, 1.5, float("nan"), "a"])
def test_energy_outside_unit_interval_raises(energy):
    with pytest.raises(ValueError, match=r"energy.*\(0, 1\]"):
        energy_rank(torch.ones(4, 4), "svd", energy)
    with pytest.raises(ValueError, match="energy"):
        energy_rule(energy)


def test_fixed_ratio():
    conv = nn.Conv2d(16, 32, 3)
    assert fixed_ratio(0.5)("c", conv, "tucker2") == (16, 8)
    assert fixed_ratio(1.0)("c", conv, "tt") == (16, 48, 32)
    assert fixed_ratio(0.5)("c", conv, "tt") == (8, 24, 16)
    assert fixed_ratio(0.5)("c", conv, "tt_tucker") == ((16, 8), (4, 12, 8))
    assert fixed_ratio(0.5)("c", conv, "cp") == 16
    assert fixed_ratio(0.01)("c", conv, "tucker2") == (1, 1)
    assert fixed_ratio(0.5)("fc", nn.Linear(64, 10), "svd") == 5
    assert fixed_ratio(0.5)("bn", nn.BatchNorm2d(4), "tucker2") is None
    assert fixed_ratio(0.5)("dw", nn.Conv2d(8, 8, 3, groups=8), "tucker2") is None
    assert fixed_ratio_rank(torch.ones(32, 16, 3, 3), "tucker2", 0.25) == (8, 4)
    for bad in (0, 1.5, -0.5):
        with pytest.raises(ValueError, match=r"ratio.*\(0, 1\]"):
            fixed_ratio(bad)


def test_tt_ranks_of_rules_are_reachable():
    # r_{k+1} <= r_k n_k and r_k <= n_k r_{k+1}: what TT-SVD can produce
    from tuckerlab.decompose import tensor_train

    w = torch.randn(64, 16, 3, 3, generator=_gen(11))
    for rule in (evbmf_rule(), energy_rule(0.3), fixed_ratio(0.1), evbmf_rule(weakening=0.2)):
        r = rule("c", nn.Conv2d(16, 64, 3), "tt")
        tensor_train(w.permute(1, 2, 3, 0), r)  # raises on unreachable ranks


def test_rules_drive_compress_model(resnet20):
    surgery = pytest.importorskip("tuckerlab.surgery")
    small, report = surgery.compress_model(resnet20, "tucker2", fixed_ratio(0.5))
    assert report.rows and all(row.rank[0] <= row.weight_shape[0] // 2 + 1 for row in report.rows)


# ------------------------------------------------------------------- budget
@pytest.mark.parametrize("metric", ["params", "macs"])
@pytest.mark.parametrize("target", [0.3, 0.5])
def test_budget_hits_the_target(resnet20, metric, target):
    res = solve_budget(resnet20, "tucker2", target, metric=metric)
    assert 0.99 * target <= res.achieved <= target
    assert res.smallest_ratio < target
    assert set(res.ranks) <= {row["name"] for row in res.report}


def test_budget_matches_the_compressed_model(resnet20):
    surgery = pytest.importorskip("tuckerlab.surgery")
    for method, metric in (("tucker2", "params"), ("tt", "macs")):
        res = solve_budget(resnet20, method, 0.4, metric=metric)
        _, report = surgery.compress_model(resnet20, method, res.ranks)
        if metric == "params":
            after = report.params_after / report.params_before
        else:
            after = report.macs_after / report.macs_before
        assert after == pytest.approx(res.achieved, rel=1e-9)
        assert 0.396 <= after <= 0.4


def test_budget_multiple_of_eight(resnet20):
    res = solve_budget(resnet20, "tucker2", 0.4, metric="macs", multiple_of=8)
    assert 0.99 * 0.4 <= res.achieved <= 0.4
    shapes = dict(resnet20.named_modules())
    for name, (r_out, r_in) in res.ranks.items():
        t, s = shapes[name].weight.shape[:2]
        assert r_out % 8 == 0 and r_in % 8 == 0 and r_out <= t and r_in <= s


@pytest.mark.parametrize("target", [0, 1.5, -0.2, float("nan")])
def test_budget_outside_unit_interval_raises(resnet20, target):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        solve_budget(resnet20, "tucker2", target)


def test_unreachable_budget_says_the_smallest_ratio(resnet20):
    smallest = solve_budget(resnet20, "tucker2", 0.5).smallest_ratio
    with pytest.raises(ValueError, match=f"unreachable.*{smallest:.4f}"):
        solve_budget(resnet20, "tucker2", smallest / 2)


# ------------------------------------------------------- Bayesian optimisation
def test_bayesopt_is_reproducible_and_sensible():
    import optuna

    w = _tucker2_weight(32, 24, 6, 4, _gen(12))
    level = optuna.logging.get_verbosity()
    a = bayesopt_ranks(w, n_trials=15, seed=0)
    torch.manual_seed(123)  # the global torch seed must not matter
    np.random.seed(5)
    b = bayesopt_ranks(w, n_trials=15, seed=0)
    assert a.ranks == b.ranks and a.value == b.value
    assert optuna.logging.get_verbosity() == level  # quietened only during the search
    assert len(a.studies.trials) == 15
    r_out, r_in = a.ranks
    assert 2 <= r_out <= 31 and 2 <= r_in <= 23
    # better than the smallest ranks, whose error is large
    assert a.value < a.studies.trials[0].value or a.value < 0.9


def test_bayesopt_tiny_dims_and_bad_method():
    assert bayesopt_ranks(torch.randn(2, 1, 3, 3), n_trials=3).ranks == (2, 1)
    with pytest.raises(ValueError, match="Tucker-2"):
        bayesopt_ranks(torch.randn(8, 8, 3, 3), method="tt")
    with pytest.raises(ValueError, match="4-D"):
        bayesopt_ranks(torch.randn(8, 8))


def test_bayesopt_global_factor(resnet20):
    calls = []

    def objective(ranks, factor):
        calls.append(factor)
        return (factor - 0.37) ** 2

    res = bayesopt_global_factor(resnet20, "tucker2", objective=objective, base="full", n_trials=14, seed=0)
    again = bayesopt_global_factor(resnet20, "tucker2", objective=objective, base="full", n_trials=14, seed=0)
    assert res.factor == again.factor
    assert abs(res.factor - 0.37) < 0.05
    assert len(calls) == 28
    conv = dict(resnet20.named_modules())["layer3.0.conv2"]
    assert res.ranks["layer3.0.conv2"] == fixed_ratio(res.factor)("layer3.0.conv2", conv, "tucker2")
    assert "conv1" not in res.ranks  # the first conv is left dense, as compress_model does
    with pytest.raises(ValueError, match="bounds"):
        bayesopt_global_factor(resnet20, bounds=(0.0, 1.0))


# ------------------------------------------------------------ specifications
def test_from_spec(resnet20):
    from tuckerlab.rank import from_spec

    conv = nn.Conv2d(16, 32, 3)
    assert from_spec("ratio:0.5")("c", conv, "tucker2") == (16, 8)
    assert from_spec("evbmf:0")("c", conv, "tucker2") == (32, 16)
    assert from_spec("4,4") == (4, 4) and from_spec("8") == 8
    assert from_spec("8,8;4,6,4") == ((8, 8), (4, 6, 4))
    ranks = from_spec("params:0.5", model=resnet20, method="tucker2")
    assert ranks == solve_budget(resnet20, "tucker2", 0.5).ranks
    with pytest.raises(ValueError, match="not understood"):
        from_spec("bogus")
    with pytest.raises(ValueError, match="needs the model"):
        from_spec("macs:0.5")
