"""Tests of tuckerlab.decompose: parity with tensorly, exactness, contracts."""
import math

import pytest
import tensorly as tl
import torch
from tensorly.decomposition import parafac as tl_parafac
from tensorly.decomposition import partial_tucker as tl_partial_tucker
from tensorly.decomposition import tensor_train as tl_tensor_train
from tensorly.decomposition import tucker as tl_tucker

from tuckerlab.decompose import (
    CPTensor,
    TTTensor,
    TTTuckerTensor,
    TuckerTensor,
    cp,
    tensor_train,
    tt_tucker,
    tucker,
)

# tensorly warns when a reference run pads a factor beyond the rank of an unfolding.
# the matrices here are tiny: threads only add overhead (and contention)
pytestmark = [
    pytest.mark.filterwarnings("ignore:Trying to compute SVD with n_eigenvecs:UserWarning"),
    pytest.mark.usefixtures("one_thread_module"),
]


def rel_err(approx, exact):
    return float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact))


def conv_like(shape=(64, 32, 3, 3), seed=0, dtype=torch.float32):
    """A conv weight with a decaying channel spectrum plus noise, like trained ones."""
    g = torch.Generator().manual_seed(seed)
    t, s = shape[0], shape[1]
    a = torch.randn(t, 8, generator=g) @ torch.randn(8, s * math.prod(shape[2:]), generator=g)
    w = a.reshape(shape) + 0.3 * torch.randn(shape, generator=g)
    return w.to(dtype)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)



@pytest.fixture
def tl_pytorch():
    """tensorly on its pytorch backend for one test, previous backend restored."""
    old = tl.get_backend()
    tl.set_backend("pytorch")
    yield
    tl.set_backend(old)


TENSORS = {
    "random": lambda: randn(10, 12, 14, seed=1),
    "conv": lambda: conv_like((64, 32, 3, 3)),
}

# 1% relative slack on the reconstruction error.
SLACK = 1.01


# --------------------------------------------------------------------------
# parity with tensorly
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", TENSORS)
@pytest.mark.parametrize("method", ["hosvd", "hooi"])
def test_tucker_full_parity(tl_pytorch, name, method):
    x = TENSORS[name]()
    rank = [max(1, n // 2) for n in x.shape]
    n_iter = 0 if method == "hosvd" else 100
    ref = tl.tucker_to_tensor(tl_tucker(x, rank, n_iter_max=n_iter, tol=1e-8))
    ours = tucker(x, rank, method=method)
    assert ours.rank == tuple(rank)
    assert rel_err(ours.to_tensor(), x) <= SLACK * rel_err(ref, x)


@pytest.mark.parametrize("name", TENSORS)
@pytest.mark.parametrize("method", ["hosvd", "hooi"])
def test_tucker_partial_parity(tl_pytorch, name, method):
    x = TENSORS[name]()
    modes = (0, 1)
    rank = (x.shape[0] // 2, x.shape[1] // 2)
    n_iter = 0 if method == "hosvd" else 100
    (core, factors), _ = tl_partial_tucker(
        x, rank, modes=list(modes), n_iter_max=n_iter, tol=1e-8
    )
    ref = tl.tenalg.multi_mode_dot(core, factors, modes=list(modes))
    ours = tucker(x, rank, modes=modes, method=method)
    assert ours.rank == rank
    assert rel_err(ours.to_tensor(), x) <= SLACK * rel_err(ref, x)


def test_hooi_no_worse_than_hosvd():
    x = conv_like()
    for modes, rank in [((0, 1), (16, 8)), (None, (16, 8, 2, 2))]:
        e_hosvd = rel_err(tucker(x, rank, modes=modes, method="hosvd").to_tensor(), x)
        e_hooi = rel_err(tucker(x, rank, modes=modes, method="hooi").to_tensor(), x)
        assert e_hooi <= e_hosvd * (1 + 1e-6)


@pytest.mark.parametrize("name", TENSORS)
def test_tensor_train_parity(tl_pytorch, name):
    x = TENSORS[name]()
    if x.ndim == 4:
        x = x.permute(1, 2, 3, 0)  # conv weight in the TT layout (S, Kh, Kw, T)
    full = tensor_train(x, rank=10**6).rank
    rank = (1,) + tuple(max(1, r // 2) for r in full[1:-1]) + (1,)
    ref = tl.tt_to_tensor(tl_tensor_train(x, list(rank)))
    ours = tensor_train(x, rank=rank)
    assert ours.rank == rank
    assert rel_err(ours.to_tensor(), x) <= SLACK * rel_err(ref, x)


@pytest.mark.parametrize("name", TENSORS)
def test_cp_parity(tl_pytorch, name):
    x = TENSORS[name]()
    ref = tl.cp_to_tensor(tl_parafac(x, 12, n_iter_max=200, tol=1e-10, init="svd", random_state=0))
    ours = cp(x, 12, random_state=0)
    assert ours.rank == 12
    assert rel_err(ours.to_tensor(), x) <= SLACK * rel_err(ref, x)


def test_cp_restores_tensorly_backend():
    before = tl.get_backend()
    cp(randn(4, 5, 6), 2, n_iter_max=5)
    assert tl.get_backend() == before


# --------------------------------------------------------------------------
# exactness
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hosvd", "hooi"])
@pytest.mark.parametrize("modes", [None, (0, 1), (2,), (3, 1)])
def test_tucker_exact_at_full_rank(method, modes):
    x = randn(6, 5, 3, 4, dtype=torch.float64)
    m = tuple(range(x.ndim)) if modes is None else modes
    tk = tucker(x, [x.shape[i] for i in m], modes=modes, method=method)
    assert rel_err(tk.to_tensor(), x) < 1e-10


def test_tucker_exact_on_planted_low_multilinear_rank():
    core = randn(3, 2, 2, dtype=torch.float64)
    qs = [torch.linalg.qr(randn(n, r, seed=n, dtype=torch.float64))[0]
          for n, r in zip((8, 7, 6), (3, 2, 2))]
    x = torch.einsum("abc,ia,jb,kc->ijk", core, *qs)
    for method in ("hosvd", "hooi"):
        assert rel_err(tucker(x, (3, 2, 2), method=method).to_tensor(), x) < 1e-10


@pytest.mark.parametrize("rank", [10**6, "max"])
def test_tensor_train_exact_at_full_rank(rank):
    x = randn(4, 3, 5, 2, 3, dtype=torch.float64)
    if rank == "max":
        rank = (1, 4, 12, 6, 3, 1)
    tt = tensor_train(x, rank=rank)
    assert tt.rank == (1, 4, 12, 6, 3, 1)
    assert rel_err(tt.to_tensor(), x) < 1e-10


def test_tensor_train_exact_on_planted_tt():
    shape, ranks = (5, 6, 4, 7), (1, 2, 3, 2, 1)
    cores = [randn(ranks[k], shape[k], ranks[k + 1], seed=k, dtype=torch.float64) for k in range(4)]
    x = TTTensor(cores).to_tensor()
    tt = tensor_train(x, rank=ranks)
    assert rel_err(tt.to_tensor(), x) < 1e-10
    # The delta-truncation finds the planted ranks by itself.
    assert tensor_train(x, eps=1e-6).rank == ranks


# --------------------------------------------------------------------------
# float32 precision: the Gram matrices are formed and diagonalised in float64
# --------------------------------------------------------------------------


def planted_rank16_conv():
    """A float32 64x64x3x3 weight of exact multilinear rank (16, 16) in its channel modes.

    The core's channel spectrum falls as ``0.6**k``: its 16th singular value
    is about 1e-3 of the first, so a float32 Gram matrix (condition number
    squared, 1e-6) cannot resolve it.
    """
    fall = 0.6 ** torch.arange(16.0)
    core = randn(16, 16, 3, 3, seed=1) * fall[:, None, None, None] * fall[None, :, None, None]
    return torch.einsum("abhw,ta,sb->tshw", core, randn(64, 16, seed=2), randn(64, 16, seed=3))


def steep_conv(decay=0.3):
    """A 64x64x3x3 weight whose output-channel singular values fall as ``decay**k``."""
    u = torch.linalg.qr(randn(64, 64, seed=4, dtype=torch.float64))[0]
    v = torch.linalg.qr(randn(64 * 9, 64, seed=5, dtype=torch.float64))[0]
    sigma = decay ** torch.arange(64, dtype=torch.float64)
    return ((u * sigma) @ v.T).reshape(64, 64, 3, 3), sigma


def test_float32_projection_of_an_exactly_low_rank_weight_is_exact():
    # With float32 Gram matrices this was 3.3e-4 (Tucker-2) and 2.0e-4 (TT).
    w = planted_rank16_conv()
    assert rel_err(tucker(w, (16, 16), modes=(0, 1)).to_tensor(), w) < 1e-5
    wt = w.permute(1, 2, 3, 0)  # (S, Kh, Kw, T): a TT of ranks (16, 48, 16) is exact
    assert rel_err(tensor_train(wt, (1, 16, 48, 16, 1)).to_tensor(), wt) < 1e-5


def test_float32_truncation_on_a_steep_spectrum_is_as_good_as_an_svd(tl_pytorch):
    w64, sigma = steep_conv()
    w = w64.float()
    optimal = float(sigma[16:].norm() / sigma.norm())  # Eckart-Young, mode 0 at rank 16
    ours = rel_err(tucker(w, (16,), modes=(0,)).to_tensor().double(), w64)
    (core, factors), _ = tl_partial_tucker(w, rank=[16], modes=[0], init="svd", n_iter_max=0)
    svd32 = rel_err(tl.tenalg.multi_mode_dot(core, factors, modes=[0]).double(), w64)
    # float32 SVD is about 200x the optimal error here (rounding); float32
    # eigh of a float32 Gram matrix was about 18,000x.
    assert ours <= 2 * svd32, (ours / optimal, svd32 / optimal)
    # The first TT bond is the mode-0 unfolding: truncated at 16, the rest kept.
    tt_err = rel_err(tensor_train(w, (1, 16, 9, 3, 1)).to_tensor().double(), w64)
    assert tt_err <= 2 * svd32, (tt_err / optimal, svd32 / optimal)


def test_tensor_train_cores_left_orthogonal():
    x = randn(6, 5, 4, 8, dtype=torch.float64)  # the last unfolding is tall: QR path
    tt = tensor_train(x, rank=(1, 4, 10, 3, 1))
    for c in tt.cores[:-1]:
        u = c.reshape(-1, c.shape[2])
        torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1], dtype=u.dtype))


def test_tt_tucker_exact_at_full_rank():
    x = randn(6, 5, 3, 3, dtype=torch.float64)
    for modes in [None, (0, 1)]:
        m = tuple(range(4)) if modes is None else modes
        ttk = tt_tucker(x, [x.shape[i] for i in m], 10**6, modes=modes)
        assert rel_err(ttk.to_tensor(), x) < 1e-10


def test_tt_tucker_matches_tucker_then_tt():
    x = conv_like((32, 16, 3, 3), dtype=torch.float64)
    ttk = tt_tucker(x, (8, 6), (4, 9, 3), modes=(0, 1))
    tk = tucker(x, (8, 6), modes=(0, 1))
    tt = tensor_train(tk.core, rank=(4, 9, 3))
    assert ttk.rank == ((8, 6), (1, 4, 9, 3, 1))
    torch.testing.assert_close(ttk.to_tensor(), TuckerTensor(tt.to_tensor(), tk.factors, (0, 1)).to_tensor())


def test_cp_recovers_planted_low_rank():
    fs = [randn(n, 3, seed=n, dtype=torch.float64) for n in (6, 7, 8)]
    x = torch.einsum("ir,jr,kr->ijk", *fs)
    c = cp(x, 3, random_state=0)
    assert rel_err(c.to_tensor(), x) < 1e-6
    torch.testing.assert_close(torch.linalg.norm(c.factors[0], dim=0), torch.ones(3, dtype=x.dtype))


# --------------------------------------------------------------------------
# factors, parameter counts, tolerances
# --------------------------------------------------------------------------


def test_tucker_factors_orthonormal_and_shapes():
    x = conv_like()
    tk = tucker(x, (20, 10), modes=(1, 0))
    assert tk.modes == (1, 0) and tk.rank == (20, 10)
    assert tk.factors[0].shape == (64, 10) and tk.factors[1].shape == (32, 20)
    assert tk.factors[2] is None and tk.factors[3] is None
    assert tk.core.shape == (10, 20, 3, 3) and tk.shape == x.shape
    for f in tk.factors[:2]:
        torch.testing.assert_close(f.T @ f, torch.eye(f.shape[1]), atol=1e-5, rtol=0)


def test_n_params_formulas():
    x = conv_like((64, 32, 3, 3))
    t, s, kh, kw = x.shape
    r3, r4 = 16, 8  # Kim et al. 2016: D^2 R3 R4 + S R3 + T R4 (here r_out, r_in)
    assert tucker(x, (r3, r4), modes=(0, 1)).n_params == kh * kw * r3 * r4 + t * r3 + s * r4
    rank = (16, 8, 2, 3)
    assert tucker(x, rank).n_params == math.prod(rank) + sum(n * r for n, r in zip(x.shape, rank))
    ranks = (1, 12, 9, 3, 1)
    assert tensor_train(x, rank=ranks).n_params == sum(
        ranks[k] * x.shape[k] * ranks[k + 1] for k in range(4)
    )
    tk_r, tt_r = (16, 8), (1, 6, 9, 3, 1)
    core_shape = (16, 8, 3, 3)
    assert tt_tucker(x, tk_r, tt_r, modes=(0, 1)).n_params == t * 16 + s * 8 + sum(
        tt_r[k] * core_shape[k] * tt_r[k + 1] for k in range(4)
    )
    assert cp(x, 5, n_iter_max=2).n_params == 5 * sum(x.shape)


@pytest.mark.parametrize("eps", [0.5, 0.2, 0.05, 1e-3])
def test_tensor_train_eps_respected(eps):
    x = conv_like((32, 16, 3, 3), dtype=torch.float64)
    tt = tensor_train(x, eps=eps)
    assert rel_err(tt.to_tensor(), x) <= eps


def test_tensor_train_eps_ranks_grow_as_eps_shrinks():
    x = conv_like((32, 16, 3, 3), dtype=torch.float64)
    sizes = [tensor_train(x, eps=e).n_params for e in (0.5, 0.2, 0.05)]
    assert sizes == sorted(sizes)


def test_tensor_train_int_cap():
    x = randn(64, 3, 3, 16)
    assert tensor_train(x, rank=8).rank == (1, 8, 8, 8, 1)
    assert tensor_train(x, rank=100).rank == (1, 64, 48, 16, 1)  # the largest ranks
    assert tensor_train(x, rank=(8, 20, 8)).rank == (1, 8, 20, 8, 1)  # inner ranks


# --------------------------------------------------------------------------
# dtype and device
# --------------------------------------------------------------------------


def _all_results(x):
    return [
        tucker(x, (4, 3), modes=(0, 1), method="hosvd"),
        tucker(x, 2, n_iter_max=3),
        tensor_train(x, rank=3),
        tt_tucker(x, (4, 3), 2, modes=(0, 1), n_iter_max=3),
        cp(x, 3, n_iter_max=5, random_state=0),
    ]


def _tensors_of(res):
    if isinstance(res, TuckerTensor):
        return [res.core] + [f for f in res.factors if f is not None]
    if isinstance(res, TTTensor):
        return res.cores
    if isinstance(res, TTTuckerTensor):
        return res.tt.cores + [f for f in res.factors if f is not None]
    assert isinstance(res, CPTensor)
    return [res.weights] + res.factors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtype_preserved(dtype):
    x = conv_like((8, 6, 3, 3), dtype=dtype)
    for res in _all_results(x):
        assert all(t.dtype == dtype and t.device == x.device for t in _tensors_of(res))
        y = res.to_tensor()
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert rel_err(y.float(), x.float()) < 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cuda_device_preserved(dtype):
    x = conv_like((8, 6, 3, 3), dtype=dtype).cuda()
    cpu = _all_results(x.cpu())
    for res, ref in zip(_all_results(x), cpu):
        assert all(t.is_cuda and t.dtype == dtype for t in _tensors_of(res))
        y = res.to_tensor()
        assert y.is_cuda and y.dtype == dtype and y.shape == x.shape
        assert rel_err(y.float().cpu(), x.float().cpu()) <= SLACK * rel_err(
            ref.to_tensor().float(), x.float().cpu()
        ) + 1e-3


def test_input_with_grad_is_not_tracked():
    w = torch.nn.Parameter(conv_like((8, 6, 3, 3)))
    for res in _all_results(w):
        assert not any(t.requires_grad for t in _tensors_of(res))


# --------------------------------------------------------------------------
# reproducibility
# --------------------------------------------------------------------------


def test_hooi_reproducible():
    x = conv_like()
    a = tucker(x, (16, 8), modes=(0, 1), random_state=0)
    b = tucker(x, (16, 8), modes=(0, 1), random_state=0)
    assert torch.equal(a.core, b.core) and all(
        torch.equal(a.factors[m], b.factors[m]) for m in (0, 1)
    )


@pytest.mark.parametrize("init", ["svd", "random"])
def test_cp_reproducible_with_random_state(init):
    x = randn(5, 6, 3)  # rank 7 > 5, 6, 3: the svd init pads with random columns
    a = cp(x, 7, n_iter_max=20, init=init, random_state=3)
    b = cp(x, 7, n_iter_max=20, init=init, random_state=3)
    assert torch.equal(a.to_tensor(), b.to_tensor())


# --------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------

W = conv_like((64, 32, 3, 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rank=(70, 16), modes=(1, 0)), r"rank\[0\]=70 for mode 1 of size 32: must be an integer in \[1, 32\]"),
        (dict(rank=(32, 70), modes=(0, 1)), r"rank\[1\]=70 for mode 1 of size 32"),
        (dict(rank=0, modes=(0, 1)), r"rank=0 for mode 0 of size 64: must be an integer in \[1, 64\]"),
        (dict(rank=-3), r"rank=-3 for mode 0 of size 64"),
        (dict(rank=4), r"rank=4 for mode 2 of size 3: must be an integer in \[1, 3\]"),
        (dict(rank=(8, 4.0), modes=(0, 1)), r"rank\[1\]=4.0 for mode 1 of size 32: must be an integer"),
        (dict(rank=True), r"rank=True for mode 0"),
        (dict(rank=(8, 4, 2)), r"rank=\(8, 4, 2\) has 3 entries.*4 entries for modes \(0, 1, 2, 3\)"),
        (dict(rank=(8, 4), modes=(0, 4)), r"modes\[1\]=4 is out of range .*\[-4, 3\]"),
        (dict(rank=(8, 4), modes=(1, -3)), r"modes\[1\]=-3 repeats mode 1"),
        (dict(rank=8, modes=()), r"modes=\(\): must name at least one mode"),
        (dict(rank=2, method="svd"), r"method='svd': must be one of 'hooi', 'hosvd'"),
        (dict(rank=2, n_iter_max=-1), r"n_iter_max=-1"),
        (dict(rank=2, tol=-1e-3), r"tol=-0.001"),
    ],
)
def test_tucker_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tucker(W, **kwargs)


P = conv_like((64, 32, 3, 3)).permute(1, 2, 3, 0)  # (32, 3, 3, 64): largest ranks (1, 32, 96, 64, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), r"give exactly one of rank .* and eps"),
        (dict(rank=4, eps=0.1), r"rank=4, eps=0.1: give exactly one"),
        (dict(eps=0.0), r"eps=0.0: must be a finite real number > 0"),
        (dict(eps=-0.5), r"eps=-0.5"),
        (dict(rank=0), r"rank=0: must be an integer in \[1, inf\)"),
        (dict(rank=2.5), r"rank=2.5"),
        (dict(rank=(1, 40, 96, 64, 1)), r"rank\[1\]=40 at bond 1 \(between modes 0 and 1\) of shape \(32, 3, 3, 64\): must be an integer in \[1, 32\]"),
        (dict(rank=(8, 97, 8)), r"rank\[1\]=97 at bond 2 .*\[1, 96\]"),
        (dict(rank=(8, 0, 8)), r"rank\[1\]=0 at bond 2"),
        (dict(rank=(2, 64, 8)), r"rank\[1\]=64 at bond 2 .*\[1, 6\] given its neighbours"),
        (dict(rank=(2, 1, 8, 3, 1)), r"rank\[0\]=2 is a boundary rank .*: must be 1"),
        (dict(rank=(8, 8)), r"rank=\(8, 8\) has 2 entries"),
    ],
)
def test_tensor_train_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tensor_train(P, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tucker_rank=(70, 8), tt_rank=4, modes=(0, 1)), r"tucker_rank\[0\]=70 for mode 0 of size 64"),
        # core (16, 8, 3, 3): largest TT ranks (1, 16, 9, 3, 1)
        (dict(tucker_rank=(16, 8), tt_rank=(16, 30, 3), modes=(0, 1)), r"tt_rank\[1\]=30 at bond 2 .*\[1, 9\]"),
        (dict(tucker_rank=(16, 8), tt_rank=0, modes=(0, 1)), r"tt_rank=0"),
        (dict(tucker_rank=8, tt_rank=4, modes=(0, 9)), r"modes\[1\]=9"),
    ],
)
def test_tt_tucker_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tt_tucker(W, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rank=0), r"rank=0 for shape \(64, 32, 3, 3\): must be an integer in \[1, 288\]"),
        (dict(rank=289), r"rank=289 .*\[1, 288\]"),
        (dict(rank=3.0), r"rank=3.0"),
        (dict(rank=3, init="nndsvd"), r"init='nndsvd': must be one of 'svd', 'random'"),
    ],
)
def test_cp_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cp(W, **kwargs)


@pytest.mark.parametrize("call", [
    lambda x: tucker(x, 2), lambda x: tensor_train(x, rank=2),
    lambda x: tt_tucker(x, 2, 2), lambda x: cp(x, 2),
])
def test_type_errors(call):
    import numpy as np

    with pytest.raises(TypeError, match="must be a torch.Tensor, got numpy.ndarray"):
        call(np.ones((3, 4, 5)))
    with pytest.raises(TypeError, match="floating-point dtype .* got torch.int64"):
        call(torch.ones(3, 4, 5, dtype=torch.int64))
