"""Every check in tuckerlab.exercises passes a correct answer and fails wrong ones."""

import math
import re

import numpy as np
import pytest
import torch

from tuckerlab import exercises as ex


# ---------------------------------------------------------------------------
# correct answers, written the way a student might
# ---------------------------------------------------------------------------

def unfold(x, n):
    return x.movedim(n, 0).reshape(x.shape[n], -1)


def unfold_numpy(x, n):
    return np.reshape(np.moveaxis(np.asarray(x), n, 0), (x.shape[n], -1))


def fold(m, n, shape):
    rest = [s for i, s in enumerate(shape) if i != n]
    return m.reshape(shape[n], *rest).movedim(0, n)


def mode_product(x, u, n):
    return torch.tensordot(x, u, dims=([n], [1])).movedim(-1, n)


def hosvd(x, rank):
    factors = [torch.linalg.svd(unfold(x, n), full_matrices=False).U[:, :r] for n, r in enumerate(rank)]
    core = x
    for n, u in enumerate(factors):
        core = mode_product(core, u.T, n)
    return core, factors


def tt_svd(x, ranks):
    shape = x.shape
    full = (1, *ranks, 1)
    cores, c = [], x.reshape(1, -1)
    for k in range(len(shape) - 1):
        c = c.reshape(full[k] * shape[k], -1)
        u, s, vh = torch.linalg.svd(c, full_matrices=False)
        r = full[k + 1]
        cores.append(u[:, :r].reshape(full[k], shape[k], r))
        c = s[:r, None] * vh[:r]
    cores.append(c.reshape(full[-2], shape[-1], 1))
    return cores


def tucker2_params(T, S, kh, kw, r_out, r_in):
    return S * r_in + kh * kw * r_in * r_out + r_out * T


def tucker2_macs(T, S, kh, kw, r_out, r_in, H, W):
    return H * W * tucker2_params(T, S, kh, kw, r_out, r_in)


@pytest.mark.parametrize(
    "check, answer",
    [
        (ex.check_unfold, unfold),
        (ex.check_unfold, unfold_numpy),
        (ex.check_fold, fold),
        (ex.check_mode_product, mode_product),
        (ex.check_hosvd, hosvd),
        (ex.check_tt_svd, tt_svd),
        (ex.check_tucker2_params, tucker2_params),
        (ex.check_tucker2_macs, tucker2_macs),
    ],
)
def test_correct_answer_passes(check, answer, capsys):
    check(answer)
    out = capsys.readouterr().out
    assert out.startswith(f"{check.__name__} passed")


# ---------------------------------------------------------------------------
# wrong answers: each must fail, with a hint that says what is wrong
# ---------------------------------------------------------------------------

def unfold_column_major(x, n):
    y = x.movedim(n, 0)
    return y.permute(0, *range(y.ndim - 1, 0, -1)).reshape(x.shape[n], -1)


def unfold_transposed(x, n):
    return unfold(x, n).T


def unfold_one_based(x, n):
    return unfold(x, (n + 1) % x.ndim)


def fold_plain_reshape(m, n, shape):
    return m.reshape(shape)  # right for mode 0 only


def mode_product_transposed(x, u, n):
    return torch.tensordot(x, u, dims=([n], [0])).movedim(-1, n)


def mode_product_front(x, u, n):
    return torch.tensordot(u, x, dims=([1], [n]))


def hosvd_trailing_vectors(x, rank):
    factors = [torch.linalg.svd(unfold(x, n), full_matrices=False).U[:, -r:] for n, r in enumerate(rank)]
    core = x
    for n, u in enumerate(factors):
        core = mode_product(core, u.T, n)
    return core, factors


def hosvd_unnormalised(x, rank):
    core, factors = hosvd(x, rank)
    return core, [2 * u for u in factors]


def hosvd_wrong_core(x, rank):
    core, factors = hosvd(x, rank)
    return core * 1.01, factors


def hosvd_transposed_factors(x, rank):
    core, factors = hosvd(x, rank)
    return core, [u.T for u in factors]


def tt_svd_trailing(x, ranks):
    shape = x.shape
    full = (1, *ranks, 1)
    cores, c = [], x.reshape(1, -1)
    for k in range(len(shape) - 1):
        c = c.reshape(full[k] * shape[k], -1)
        u, s, vh = torch.linalg.svd(c, full_matrices=False)
        r = full[k + 1]
        cores.append(u[:, -r:].reshape(full[k], shape[k], r))
        c = s[-r:, None] * vh[-r:]
    cores.append(c.reshape(full[-2], shape[-1], 1))
    return cores


def tt_svd_squeezed_ends(x, ranks):
    cores = tt_svd(x, ranks)
    return [cores[0][0], *cores[1:-1], cores[-1][..., 0]]


def tt_svd_missing_core(x, ranks):
    return tt_svd(x, ranks)[:-1]


def params_dense(T, S, kh, kw, r_out, r_in):
    return T * S * kh * kw


def params_swapped(T, S, kh, kw, r_out, r_in):
    return tucker2_params(T, S, kh, kw, r_in, r_out)


def params_with_bias(T, S, kh, kw, r_out, r_in):
    return tucker2_params(T, S, kh, kw, r_out, r_in) + T


def params_square_kernel(T, S, kh, kw, r_out, r_in):
    return tucker2_params(T, S, kh, kh, r_out, r_in)


def macs_two_per_mac(T, S, kh, kw, r_out, r_in, H, W):
    return 2 * tucker2_macs(T, S, kh, kw, r_out, r_in, H, W)


def macs_no_spatial(T, S, kh, kw, r_out, r_in, H, W):
    return tucker2_params(T, S, kh, kw, r_out, r_in)


def raises(*args):
    raise RuntimeError("not implemented yet")


@pytest.mark.parametrize(
    "check, answer, hint",
    [
        (ex.check_unfold, unfold_column_major, "column-major"),
        (ex.check_unfold, unfold_transposed, "rows and columns are swapped"),
        (ex.check_unfold, unfold_one_based, "numbered from 0"),
        (ex.check_unfold, raises, "raised RuntimeError"),
        (ex.check_fold, fold_plain_reshape, "entries differ"),
        (ex.check_mode_product, mode_product_transposed, "U^T"),
        (ex.check_mode_product, mode_product_front, "stay in position"),
        (ex.check_hosvd, hosvd_trailing_vectors, "leading"),
        (ex.check_hosvd, hosvd_unnormalised, "not orthonormal"),
        (ex.check_hosvd, hosvd_wrong_core, "core"),
        (ex.check_hosvd, hosvd_transposed_factors, "transposed"),
        (ex.check_tt_svd, tt_svd_trailing, "reconstruct"),
        (ex.check_tt_svd, tt_svd_squeezed_ends, "3-way"),
        (ex.check_tt_svd, tt_svd_missing_core, "expected 3 cores"),
        (ex.check_tucker2_params, params_dense, "dense"),
        (ex.check_tucker2_params, params_swapped, "swapped"),
        (ex.check_tucker2_params, params_with_bias, "no bias"),
        (ex.check_tucker2_params, params_square_kernel, "Kh x Kw"),
        (ex.check_tucker2_macs, macs_two_per_mac, "not two"),
        (ex.check_tucker2_macs, macs_no_spatial, "every output position"),
    ],
)
def test_wrong_answer_fails_with_hint(check, answer, hint, capsys):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        check(answer)
    assert "passed" not in capsys.readouterr().out


def test_tt_svd_bound_catches_a_poor_truncation():
    # Right shapes, exact on the TT-rank tensor, but wasteful on generic ones:
    # keeps the leading vectors only at the first bond.
    def sloppy(x, ranks):
        cores = tt_svd(x, ranks)
        if ranks == (2, 3):  # the exact case: leave it right
            return cores
        return [cores[0]] + [torch.randn_like(c) for c in cores[1:]]

    with pytest.raises(AssertionError, match="bound"):
        ex.check_tt_svd(sloppy)


def test_tt_error_bound_is_tight_for_matrices():
    # For a matrix TT-SVD is the truncated SVD and the bound is its error.
    x = torch.randn(6, 7, dtype=torch.float64)
    cores = tt_svd(x, (3,))
    approx = ex._tt_to_tensor(cores, x.shape)
    err = float(torch.linalg.norm(x - approx) / torch.linalg.norm(x))
    assert math.isclose(err, ex._tt_error_bound(x, (3,)), rel_tol=1e-10)


# ---------------------------------------------------------------------------
# EVBMF threshold
# ---------------------------------------------------------------------------

def _evb_threshold_approx(shape, sigma2, square_root=True, larger=True, tau_scaled=True):
    small, large = sorted(shape)
    alpha = small / large
    tau = 2.5129 * math.sqrt(alpha) if tau_scaled else 2.5129
    value = (large if larger else small) * sigma2 * (1 + tau) * (1 + alpha / tau)
    return math.sqrt(value) if square_root else value


def test_evbmf_threshold_accepts_exact_and_approximate_tau(capsys):
    from tuckerlab.rank import evb_threshold

    ex.check_evbmf_threshold(evb_threshold)
    ex.check_evbmf_threshold(_evb_threshold_approx)
    ex.check_evbmf_threshold(lambda shape, s2: np.float64(_evb_threshold_approx(shape, s2)))
    assert capsys.readouterr().out.count("passed") == 3


@pytest.mark.parametrize(
    "answer, hint",
    [
        (lambda shape, s2: math.sqrt(max(shape) * s2) * (1 + math.sqrt(min(shape) / max(shape))), "Marchenko-Pastur"),
        (lambda shape, s2: _evb_threshold_approx(shape, s2, larger=False), "LARGER side"),
        (lambda shape, s2: _evb_threshold_approx(shape, s2, square_root=False), "square root"),
        (lambda shape, s2: _evb_threshold_approx(shape, math.sqrt(s2)), "not its square root"),
        (lambda shape, s2: _evb_threshold_approx(shape, s2, tau_scaled=False), "2.5129 sqrt(alpha)"),
        (lambda shape, s2: "big", "one number"),
        (lambda shape, s2: math.nan, "expected"),
        (raises, "raised RuntimeError"),
    ],
)
def test_evbmf_threshold_wrong_answer_fails_with_hint(answer, hint, capsys):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        ex.check_evbmf_threshold(answer)
    assert "passed" not in capsys.readouterr().out


# ---------------------------------------------------------------------------
# TT-Tucker parameters and the ADMM update
# ---------------------------------------------------------------------------

def tt_tucker_params(T, S, kh, kw, tucker, tt):
    (r_out, r_in), (r1, r2, r3) = tucker, tt
    return S * r_in + T * r_out + r_in * r1 + r1 * kh * r2 + r2 * kw * r3 + r3 * r_out


def test_check_tt_tucker_params_passes(capsys):
    ex.check_tt_tucker_params(tt_tucker_params)
    assert "check_tt_tucker_params passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda T, S, kh, kw, tk, tt: T * S * kh * kw, "dense"),
    (lambda T, S, kh, kw, tk, tt: tt_tucker_params(T, S, kh, kw, tk, tt) - S * tk[1] - T * tk[0], "Tucker factors"),
    (lambda T, S, kh, kw, tk, tt: S * tk[1] + T * tk[0] + tk[0] * tk[1] * kh * kw, "Tucker-2"),
    (lambda T, S, kh, kw, tk, tt: S * tt[0] + tt[0] * kh * tt[1] + tt[1] * kw * tt[2] + tt[2] * T, "plain TT"),
    (lambda T, S, kh, kw, tk, tt: tt_tucker_params(T, S, kh, kw, tk, tt) + T, "no bias"),
    (lambda T, S, kh, kw, tk, tt: 1.5, "integer"),
])
def test_check_tt_tucker_params_fails(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        ex.check_tt_tucker_params(wrong)


def admm_update(w, u, project):
    z = project(w + u)
    return z, u + w - z


def test_check_admm_update_passes(capsys):
    ex.check_admm_update(admm_update)
    assert "check_admm_update passed" in capsys.readouterr().out


def _in_place(w, u, project):
    z = project(w + u)
    u += w - z
    return z, u


@pytest.mark.parametrize("wrong, hint", [
    (lambda w, u, p: (p(w), u + w - p(w)), "not W alone"),
    (lambda w, u, p: (w + u, u - u), "call project"),
    (lambda w, u, p: (p(w + u), u + p(w + u) - w), "sign is reversed"),
    (lambda w, u, p: (p(w + u), w - p(w + u)), "accumulates"),
    (lambda w, u, p: p(w + u), r"pair \(Z, U_new\)"),
    (lambda w, u, p: (p(w + u)[:, :1], u), "shape"),
    (_in_place, "in place"),
])
def test_check_admm_update_fails(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        ex.check_admm_update(wrong)
