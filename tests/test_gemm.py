"""fastnn.gemm against the NumPy reference, on both engines and every kernel variant.

out = act(alpha * op(a) @ op(b) + beta * out + bias)
"""
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _reference as ref
from _util import (ACT_IDS, ACT_SLOPES, ACTIVATIONS, DTYPES, ENGINES, VARIANTS,
                   assert_close, laid_out, layouts, run_python, uniform)

TRANS = [(False, False), (False, True), (True, False), (True, True)]
TRANS_IDS = ["NN", "NT", "TN", "TT"]

# (M, N, K).  Microkernel tiles: MR in {4, 6, 12}, NR in {4, 8, 16, 32} (and half tiles);
# K blocks of 256; MC in {64, 72, 128, 144}; NC in {2048, 3072}.
SHAPES = [
    (1, 1, 1), (1, 7, 1), (7, 1, 2), (2, 3, 4), (1, 131, 13), (131, 1, 13),
    (7, 13, 31), (13, 7, 97), (31, 97, 13), (97, 131, 7),
    (3, 3, 5), (4, 4, 4), (5, 5, 3), (6, 8, 2), (11, 15, 9), (12, 16, 8), (13, 17, 10),
    (23, 31, 6), (24, 32, 5), (25, 33, 11), (12, 64, 3), (36, 9, 17), (6, 65, 1),
    (7, 9, 255), (13, 17, 256), (12, 33, 257), (5, 31, 600),
    (150, 40, 30),      # crosses MC
    (2, 3100, 3),       # crosses NC
]


def _make(rng, shape, dtype, trans):
    """An operand whose op() has `shape`: stored transposed (C order) when trans."""
    if trans:
        return uniform(rng, shape[::-1], dtype)
    return uniform(rng, shape, dtype)


def _gemm_both(a, b, out=None, **kw):
    """fastnn.gemm and the reference (from the same `out` contents)."""
    c0 = None if out is None else out.copy()
    expected = ref.gemm(a, b, c0, **kw)
    got = fastnn.gemm(a, b, out, **kw)
    return got, expected


# ---------------------------------------------------------------- shapes and transposes
@pytest.mark.parametrize("trans", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_shapes(shape, trans, dtype, engine, variant, rng):
    M, N, K = shape
    ta, tb = trans
    a = _make(rng, (M, K), dtype, ta)
    b = _make(rng, (K, N), dtype, tb)
    bias = uniform(rng, N, dtype)
    got, expected = _gemm_both(a, b, trans_a=ta, trans_b=tb, bias=bias)
    assert_close(got, expected, dtype, K)
    got, expected = _gemm_both(a, b, trans_a=ta, trans_b=tb)
    assert_close(got, expected, dtype, K)


def test_gemm_matches_blas_engine_exactly_enough(dtype, variant, rng):
    """The two engines agree with each other (an independent cross-check)."""
    a = uniform(rng, (37, 300), dtype)
    b = uniform(rng, (300, 45), dtype)
    n = fastnn.gemm(a, b, engine="native")
    o = fastnn.gemm(a, b, engine="blas")
    assert_close(n, o.astype(np.float64), dtype, 300)


def test_gemm_engine_argument_overrides_global(dtype, rng):
    a = uniform(rng, (5, 6), dtype)
    b = uniform(rng, (6, 7), dtype)
    for global_engine in ENGINES:
        fastnn.set_engine(global_engine)
        for e in ENGINES:
            assert_close(fastnn.gemm(a, b, engine=e), ref.gemm(a, b), dtype, 6)
        assert fastnn.get_engine() == global_engine


def test_gemm_returns_given_out(dtype, engine, rng):
    a = uniform(rng, (4, 3), dtype)
    b = uniform(rng, (3, 5), dtype)
    out = np.empty((4, 5), dtype)
    res = fastnn.gemm(a, b, out)
    assert res is out
    assert_close(out, ref.gemm(a, b), dtype, 3)
    res = fastnn.gemm(a, b)
    assert res.shape == (4, 5) and res.dtype == dtype and res.flags.c_contiguous


# ---------------------------------------------------------------- strides and layouts
def _views(rng, rows, cols, dtype):
    """(name, array) pairs all holding a rows x cols operand in a different memory layout."""
    base = uniform(rng, (2 * rows + 3, 3 * cols + 4), dtype)
    ro = uniform(rng, (rows, cols), dtype)
    ro.setflags(write=False)
    raw = np.zeros(rows * cols * dtype.itemsize + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, dtype=dtype, count=rows * cols,
                              offset=1).reshape(rows, cols)
    unaligned[...] = uniform(rng, (rows, cols), dtype)
    sliding = np.lib.stride_tricks.as_strided(   # overlapping rows (a Toeplitz view)
        uniform(rng, rows + cols, dtype), shape=(rows, cols),
        strides=(dtype.itemsize, dtype.itemsize), writeable=False)
    return [
        ("c", uniform(rng, (rows, cols), dtype)),
        ("fortran", np.asfortranarray(uniform(rng, (rows, cols), dtype))),
        ("slice", base[::2, 1::3][:rows, :cols]),
        ("slice_offset", base[3:3 + rows, 4:4 + cols]),
        ("neg_rows", base[::-1][:rows, :cols]),
        ("neg_cols", base[:rows, ::-1][:, :cols]),
        ("neg_both", base[::-2, ::-3][:rows, :cols]),
        ("fortran_neg", np.asfortranarray(base)[::-1, ::2][:rows, :cols]),
        ("transposed_view", np.ascontiguousarray(uniform(rng, (cols, rows), dtype)).T),
        ("readonly", ro),
        ("broadcast_row", np.broadcast_to(uniform(rng, (1, cols), dtype), (rows, cols))),
        ("broadcast_col", np.broadcast_to(uniform(rng, (rows, 1), dtype), (rows, cols))),
        ("unaligned", unaligned),
        ("sliding", sliding),
    ]


VIEW_NAMES = [name for name, _ in _views(np.random.default_rng(0), 2, 2, DTYPES[0])]


@pytest.mark.parametrize("view", VIEW_NAMES)
@pytest.mark.parametrize("trans", TRANS, ids=TRANS_IDS)
def test_gemm_strided_inputs(view, trans, dtype, engine, variant, rng):
    M, N, K = 13, 35, 21
    ta, tb = trans
    va = dict(_views(rng, *((K, M) if ta else (M, K)), dtype))[view]
    vb = dict(_views(rng, *((N, K) if tb else (K, N)), dtype))[view]
    bias = uniform(rng, N, dtype)
    # the operand in the odd layout against a plain one, and both odd at once
    plain_a = _make(rng, (M, K), dtype, ta)
    plain_b = _make(rng, (K, N), dtype, tb)
    for a, b in [(va, plain_b), (plain_a, vb), (va, vb)]:
        a_before, b_before = a.copy(), b.copy()
        got, expected = _gemm_both(a, b, trans_a=ta, trans_b=tb, bias=bias,
                                   activation="tanh")
        assert_close(got, expected, dtype, K)
        np.testing.assert_array_equal(a, a_before)   # inputs untouched
        np.testing.assert_array_equal(b, b_before)


def test_gemm_strided_bias(dtype, engine, variant, rng):
    a = uniform(rng, (9, 7), dtype)
    b = uniform(rng, (7, 20), dtype)
    bias_base = uniform(rng, 60, dtype)
    for bias in (bias_base[::3], bias_base[::-3], bias_base[5:25]):
        got, expected = _gemm_both(a, b, bias=bias, activation="relu")
        assert_close(got, expected, dtype, 7)


def test_gemm_same_array_both_operands(dtype, engine, variant, rng):
    a = uniform(rng, (17, 29), dtype)
    got, expected = _gemm_both(a, a, trans_b=True)
    assert_close(got, expected, dtype, 29)
    got, expected = _gemm_both(a, a, trans_a=True)
    assert_close(got, expected, dtype, 17)


# ---------------------------------------------------------------- out buffers
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
def test_gemm_out_slice_of_wider_buffer(beta, dtype, engine, variant, rng):
    for M, N, K in [(13, 35, 21), (1, 9, 4), (30, 17, 300)]:
        wide = uniform(rng, (M, N + 5), dtype)
        wide[:, N:] = 7.25
        out = wide[:, :N]
        a = uniform(rng, (M, K), dtype)
        b = uniform(rng, (K, N), dtype)
        bias = uniform(rng, N, dtype)
        got, expected = _gemm_both(a, b, out, beta=beta, bias=bias, activation="sigmoid")
        assert got is out
        assert_close(out, expected, dtype, K)
        assert np.all(wide[:, N:] == 7.25), "gemm wrote outside out[:, :N]"


def test_gemm_out_middle_columns_and_strided_rows(dtype, engine, variant, rng):
    M, N, K = 14, 19, 33
    big = np.full((3 * M, N + 10), -3.5, dtype)
    out = big[1::3, 4:4 + N]          # row stride 3*(N+10), unit column stride
    a = uniform(rng, (M, K), dtype)
    b = uniform(rng, (K, N), dtype)
    out[...] = uniform(rng, (M, N), dtype)
    got, expected = _gemm_both(a, b, out, beta=0.75, alpha=-1.25)
    assert_close(out, expected, dtype, K)
    mask = np.ones(big.shape, bool)
    mask[1::3, 4:4 + N] = False
    assert np.all(big[mask] == -3.5), "gemm wrote outside its out view"


# ---------------------------------------------------------------- zero-sized dimensions
@pytest.mark.parametrize("trans", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (0, 0, 3), (0, 0, 0), (4, 5, 0),
                                   (0, 5, 0), (4, 0, 0), (1, 33, 0)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gemm_zero_sized(shape, trans, dtype, engine, variant, rng):
    M, N, K = shape
    ta, tb = trans
    a = _make(rng, (M, K), dtype, ta)
    b = _make(rng, (K, N), dtype, tb)
    got = fastnn.gemm(a, b, trans_a=ta, trans_b=tb)
    assert got.shape == (M, N) and got.dtype == dtype
    if K == 0:
        # an empty sum is 0
        np.testing.assert_array_equal(got, np.zeros((M, N), dtype))
    bias = uniform(rng, N, dtype)
    for act, slope in ACT_SLOPES:
        c = uniform(rng, (M, N), dtype, -3, 3)
        got, expected = _gemm_both(a, b, c.copy(), trans_a=ta, trans_b=tb, alpha=2.0,
                                   beta=0.5, bias=bias, activation=act, negative_slope=slope)
        assert_close(got, expected, dtype, K)


def test_gemm_k0_is_beta_c_plus_bias_then_activation(dtype, engine, variant, rng):
    M, N = 7, 19
    a = np.empty((M, 0), dtype)
    b = np.empty((0, N), dtype)
    c = uniform(rng, (M, N), dtype, -2, 2)
    bias = uniform(rng, N, dtype, -2, 2)
    for act, slope in ACT_SLOPES:
        expected = ref.activation(1.5 * c.astype(np.float64) + bias, act, slope).astype(dtype)
        got = fastnn.gemm(a, b, c.copy(), beta=1.5, bias=bias, activation=act,
                          negative_slope=slope)
        assert_close(got, expected, dtype)
    # beta == 0: out is not read, NaNs there do not propagate
    out = np.full((M, N), np.nan, dtype)
    got = fastnn.gemm(a, b, out, bias=bias, activation="relu")
    assert_close(got, np.maximum(bias, 0)[None, :].repeat(M, 0).astype(dtype), dtype)


# ---------------------------------------------------------------- alpha and beta
@pytest.mark.parametrize("K", [1, 37, 255, 256, 257, 600])
def test_gemm_beta_zero_ignores_nan_in_out(K, dtype, engine, variant, rng):
    M, N = 13, 35
    a = uniform(rng, (M, K), dtype)
    b = uniform(rng, (K, N), dtype)
    bias = uniform(rng, N, dtype)
    for act, slope in ACT_SLOPES:
        out = np.full((M, N), np.nan, dtype)
        out[::2] = np.inf
        got = fastnn.gemm(a, b, out, beta=0.0, bias=bias, activation=act,
                          negative_slope=slope)
        assert np.all(np.isfinite(got)), f"NaN/inf in out leaked through beta=0 ({act})"
        assert_close(got, ref.gemm(a, b, bias=bias, activation=act, negative_slope=slope),
                     dtype, K)


@pytest.mark.parametrize("K", [1, 37, 256, 257, 600])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.5, 0.0), (-0.75, 1.0), (0.5, -2.0),
                                        (1.0, 0.25), (-3.0, 3.0), (0.0, 0.5), (0.0, 0.0)])
def test_gemm_alpha_beta(alpha, beta, K, dtype, engine, variant, rng):
    M, N = 14, 37
    a = uniform(rng, (M, K), dtype)
    b = uniform(rng, (K, N), dtype)
    c = uniform(rng, (M, N), dtype, -4, 4)
    bias = uniform(rng, N, dtype)
    for act, slope in [("identity", 0.01), ("leaky_relu", 0.2), ("sigmoid", 0.01)]:
        for bb in (None, bias):
            got, expected = _gemm_both(a, b, c.copy(), alpha=alpha, beta=beta, bias=bb,
                                       activation=act, negative_slope=slope)
            assert_close(got, expected, dtype, K, scale=4.0)


def test_gemm_beta_one_accumulates(dtype, engine, variant, rng):
    """Repeated calls with beta=1 sum the products (the gradient-accumulation use)."""
    M, N, K = 21, 30, 270
    out = np.zeros((M, N), dtype)
    total = np.zeros((M, N))
    for _ in range(4):
        a = uniform(rng, (K, M), dtype)
        b = uniform(rng, (N, K), dtype)
        fastnn.gemm(a, b, out, trans_a=True, trans_b=True, beta=1.0)
        total += a.T.astype(np.float64) @ b.T.astype(np.float64)
    assert_close(out, total.astype(dtype), dtype, 4 * K)


def test_gemm_alpha_zero_does_not_read_operands_values(dtype, engine, variant, rng):
    """alpha == 0: out = beta*out + bias (BLAS does not reference A and B then)."""
    a = np.full((6, 9), np.nan, dtype)
    b = np.full((9, 10), np.inf, dtype)
    c = uniform(rng, (6, 10), dtype)
    bias = uniform(rng, 10, dtype)
    got = fastnn.gemm(a, b, c.copy(), alpha=0.0, beta=2.0, bias=bias)
    assert_close(got, (2.0 * c.astype(np.float64) + bias).astype(dtype), dtype)


# ---------------------------------------------------------------- activation epilogues
@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(13, 33, 20), (12, 32, 7), (30, 70, 300), (5, 3, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gemm_activation_epilogue(act, slope, shape, dtype, engine, variant, rng):
    M, N, K = shape
    a = uniform(rng, (M, K), dtype, -2, 2)
    b = uniform(rng, (K, N), dtype)
    bias = uniform(rng, N, dtype)
    for trans_a in (False, True):
        aa = np.ascontiguousarray(a.T) if trans_a else a
        got, expected = _gemm_both(aa, b, trans_a=trans_a, bias=bias, activation=act,
                                   negative_slope=slope)
        assert_close(got, expected, dtype, K, scale=2.0)
    # also with beta and a non-unit alpha, reading out
    c = uniform(rng, (M, N), dtype)
    got, expected = _gemm_both(a, b, c, alpha=-1.5, beta=0.5, bias=bias, activation=act,
                               negative_slope=slope)
    assert_close(got, expected, dtype, K, scale=3.0)


def _z_grid(dtype, M=41, N=37):
    """a (M,1), b (1,N), bias (N,) whose product + bias spans [-100, 100] (K = 1)."""
    a = np.linspace(-100, 100, M).astype(dtype)[:, None]
    b = np.linspace(0.5, 1.0, N).astype(dtype)[None, :]
    bias = np.linspace(-1.0, 1.0, N).astype(dtype)
    return a, b, bias


@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
def test_gemm_activation_large_magnitude(act, slope, dtype, engine, variant):
    a, b, bias = _z_grid(dtype)
    expected = ref.gemm(a, b, bias=bias, activation=act, negative_slope=slope)
    got = fastnn.gemm(a, b, bias=bias, activation=act, negative_slope=slope)
    assert not np.any(np.isnan(got)) and not np.any(np.isinf(got))
    assert_close(got, expected, dtype, scale=100.0 if act in ("identity", "relu",
                                                              "leaky_relu") else 1.0)
    z = a.astype(np.float64) @ b.astype(np.float64) + bias
    if act == "sigmoid":
        assert np.all((got >= 0) & (got <= 1))
        assert np.all(got[z >= 40] == 1), "sigmoid(z >= 40) must round to exactly 1"
        assert np.all(got[z <= -90] < 1e-30), "sigmoid(z <= -90) must be ~0"
        assert np.all(np.diff(got[:, 0]) >= 0), "sigmoid must be monotone"
    if act == "tanh":
        assert np.all((got >= -1) & (got <= 1))
        assert np.all(got[z >= 20] == 1) and np.all(got[z <= -20] == -1)
        assert np.all(np.diff(got[:, 0]) >= 0), "tanh must be monotone"


@pytest.mark.parametrize("K", [1, 40])
def test_gemm_activation_large_magnitude_wide_k(K, dtype, engine, variant, rng):
    """Pre-activations of magnitude ~100 built from many products."""
    M, N = 25, 40
    a = uniform(rng, (M, K), dtype, -100.0 / np.sqrt(K), 100.0 / np.sqrt(K))
    b = uniform(rng, (K, N), dtype, -1.0, 1.0)
    b[:, ::2] = np.sign(b[:, ::2]) + (b[:, ::2] == 0)    # some columns of full magnitude
    for act in ("sigmoid", "tanh"):
        got, expected = _gemm_both(a, b, activation=act)
        assert np.all(np.isfinite(got))
        assert_close(got, expected, dtype, K)


@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
def test_gemm_activation_infinite_preactivation(act, slope, dtype, engine, variant):
    """z = +-inf saturates (relu(inf)=inf, sigmoid(-inf)=0, tanh(-inf)=-1), no NaN."""
    a = np.array([[np.inf], [-np.inf], [1.0], [-1.0]], dtype)
    b = np.ones((1, 19), dtype)
    got = fastnn.gemm(a, b, activation=act, negative_slope=slope)
    expected = ref.gemm(a, b, activation=act, negative_slope=slope)
    assert not np.any(np.isnan(got))
    assert_close(got, expected, dtype)


@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
def test_gemm_nan_propagates(act, slope, dtype, engine, variant, rng):
    """A NaN in row i of a (or column j of b) makes row i (column j) NaN, through every
    activation (relu keeps NaN, unlike a plain max that may drop it); nothing else."""
    M, N, K = 13, 35, 9
    a = uniform(rng, (M, K), dtype)
    b = uniform(rng, (K, N), dtype)
    a[3, 4] = np.nan
    b[2, 17] = np.nan
    bias = uniform(rng, N, dtype)
    got, expected = _gemm_both(a, b, bias=bias, activation=act, negative_slope=slope)
    nan_expected = np.zeros((M, N), bool)
    nan_expected[3, :] = True
    nan_expected[:, 17] = True
    np.testing.assert_array_equal(np.isnan(got), nan_expected)
    assert_close(got, expected, dtype, K)
    # NaN in the bias
    bias[5] = np.nan
    a[3, 4] = 0.5
    b[2, 17] = 0.5
    got, expected = _gemm_both(a, b, bias=bias, activation=act, negative_slope=slope)
    assert np.all(np.isnan(got[:, 5])) and not np.any(np.isnan(np.delete(got, 5, axis=1)))
    assert_close(got, expected, dtype, K)


def test_gemm_relu_at_and_below_zero(dtype, engine, variant):
    a = np.array([[1.0, -1.0], [0.0, 0.0], [-2.0, 1.0]], dtype)
    b = np.ones((2, 3), dtype)
    got = fastnn.gemm(a, b, activation="relu")
    np.testing.assert_array_equal(got, np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype))
    got = fastnn.gemm(a, b, activation="leaky_relu", negative_slope=0.2)
    np.testing.assert_array_equal(got, np.array([[0] * 3, [0] * 3, [-0.2] * 3], dtype))


def test_gemm_activation_names_case_insensitive(dtype, rng):
    a = uniform(rng, (3, 4), dtype)
    b = uniform(rng, (4, 5), dtype)
    assert_close(fastnn.gemm(a, b, activation="ReLU"), ref.gemm(a, b, activation="relu"),
                 dtype, 4)


# ---------------------------------------------------------------- property test
@pytest.mark.parametrize("variant_name", VARIANTS)
@pytest.mark.parametrize("engine_name", ENGINES)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(M=st.integers(0, 40), N=st.integers(0, 40), K=st.integers(0, 300),
       trans_a=st.booleans(), trans_b=st.booleans(), dt=st.sampled_from(DTYPES),
       lay_a=layouts(), lay_b=layouts(),
       alpha=st.sampled_from([1.0, -0.5, 2.0]), beta=st.sampled_from([0.0, 1.0, 0.5]),
       use_bias=st.booleans(), act=st.sampled_from(ACTIVATIONS),
       out_pad=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_gemm_property(engine_name, variant_name, M, N, K, trans_a, trans_b, dt, lay_a,
                       lay_b, alpha, beta, use_bias, act, out_pad, seed):
    fastnn.set_kernel_variant(variant_name)
    rng = np.random.default_rng(seed)
    a = laid_out(rng, (K, M) if trans_a else (M, K), dt, lay_a)
    b = laid_out(rng, (N, K) if trans_b else (K, N), dt, lay_b)
    bias = rng.uniform(-1, 1, N).astype(dt) if use_bias else None
    wide = rng.uniform(-1, 1, size=(M, N + out_pad)).astype(dt)
    sentinel = wide[:, N:].copy()
    out = wide[:, :N]
    c0 = out.copy()
    got = fastnn.gemm(a, b, out, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta,
                      bias=bias, activation=act, engine=engine_name)
    expected = ref.gemm(a, b, c0, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta,
                        bias=bias, activation=act)
    assert got is out
    assert_close(got, expected, dt, K, scale=2.0)
    np.testing.assert_array_equal(wide[:, N:], sentinel)


# ---------------------------------------------------------------- memory bounds
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs mmap + mprotect")
def test_no_out_of_bounds_memory_access():
    """Every operand and output flush against an inaccessible page (tests/_guard_pages.py),
    for gemm / linear_* / activation_*, both engines, every variant and dtype: one element
    read or written out of bounds kills the child with SIGSEGV."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_guard_pages.py")
    res = run_python([script])
    assert res.returncode == 0, (f"exit status {res.returncode} (-11: segfault)\n"
                                 f"{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    assert res.stdout.split()[0] == "ok", res.stdout


# ---------------------------------------------------------------- in-place vs packed operands
@pytest.mark.parametrize("shape", [(13, 31, 37), (64, 1000, 100), (25, 300, 70), (7, 5, 3),
                                   (48, 257, 96)])
def test_in_place_and_packed_operands_bitwise_equal(shape, dtype, variant):
    """The native engine reads row-major operands in place when they are reused little and
    packs them otherwise; both paths must give bitwise identical results (and match the
    reference), with bias and a nonlinear epilogue."""
    from fastnn._kernels import gemm as _g
    rng = np.random.default_rng(7)
    M, K, N = shape
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    outs = []
    try:
        for in_a, in_b in [(True, True), (False, False), (True, False), (False, True)]:
            _g._set_direct(in_a, in_b)
            outs.append(fastnn.gemm(a, b, bias=bias, activation="tanh", engine="native",
                                    n_threads=1))
    finally:
        _g._set_direct(True, True)
    for o in outs[1:]:
        assert np.array_equal(outs[0], o)
    expected = ref.gemm(a, b, bias=bias, activation="tanh")
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(outs[0], expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------- one or two rows (GEMV)
@pytest.mark.parametrize("M", [1, 2])
@pytest.mark.parametrize("K,N", [(1, 1), (2, 64), (15, 7), (16, 3), (33, 17), (784, 40)])
@pytest.mark.parametrize("layout", ["x@W.T", "dz@W", "strided"])
def test_few_rows_run_as_matrix_vector_products(M, K, N, layout, dtype):
    """At most two rows (beta == 0) run as matrix-vector products reading B in place: the
    dot form (B = W.T, rows of W contiguous), the axpy form (B row-major), and a strided
    A; every activation with a bias, against the reference and against the packed path."""
    from fastnn._kernels import gemm as _g
    rng = np.random.default_rng(K * 100 + N + M)
    if layout == "x@W.T":
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((N, K)).astype(dtype).T
    elif layout == "dz@W":
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, N)).astype(dtype)
    else:
        a = rng.standard_normal((K, M + 3)).astype(dtype).T[:M]
        b = rng.standard_normal((N, K)).astype(dtype).T
    bias = rng.standard_normal(N).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for act, slope in ACT_SLOPES:
        got = fastnn.gemm(a, b, bias=bias, activation=act, negative_slope=slope,
                          engine="native", n_threads=2)
        old = _g._set_gemv_max_m(0)
        try:
            packed = fastnn.gemm(a, b, bias=bias, activation=act, negative_slope=slope,
                                 engine="native", n_threads=1)
        finally:
            _g._set_gemv_max_m(old)
        expected = ref.gemm(a, b, bias=bias, activation=act, negative_slope=slope)
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.sqrt(K))
        np.testing.assert_allclose(got, packed, rtol=tol, atol=tol * np.sqrt(K))
