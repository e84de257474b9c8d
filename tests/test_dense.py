"""Dense-layer kernels: linear_forward / linear_backward / activation_forward /
activation_backward against the reference, fused vs unfused, finite differences and PyTorch."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _reference as ref
from _util import (ACT_IDS, ACT_SLOPES, DTYPES, ENGINES, VARIANTS, assert_bitwise_equal,
                   assert_close, laid_out, layouts, uniform)

# (batch, in_features, out_features)
SHAPES = [(5, 4, 3), (1, 1, 1), (13, 37, 33), (12, 16, 32), (7, 300, 20), (40, 9, 70)]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def _layer(rng, shape, dtype, bias=True):
    M, K, N = shape
    x = uniform(rng, (M, K), dtype)
    W = uniform(rng, (N, K), dtype, -1 / np.sqrt(max(K, 1)), 1 / np.sqrt(max(K, 1)))
    b = uniform(rng, N, dtype) if bias else None
    return x, W, b


def _check_backward(got, expected, dtype, M, K, N, grad_x=True, grad_b=True):
    gx, gW, gb = got
    ex, eW, eb = expected
    if grad_x:
        assert_close(gx, ex, dtype, N, err_msg="grad_x")
    else:
        assert gx is None
    assert_close(gW, eW, dtype, M, err_msg="grad_W")
    if grad_b:
        assert_close(gb, eb, dtype, M, err_msg="grad_b")
    else:
        assert gb is None


# ---------------------------------------------------------------- forward
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_linear_forward(shape, act, slope, bias, dtype, engine, variant, rng):
    x, W, b = _layer(rng, shape, dtype, bias)
    got = fastnn.linear_forward(x, W, b, act, negative_slope=slope)
    expected = ref.linear_forward(x, W, b, act, negative_slope=slope)
    assert_close(got, expected, dtype, shape[1])
    out = np.full(expected.shape, np.nan, dtype)
    res = fastnn.linear_forward(x, W, b, act, out, negative_slope=slope)
    assert res is out
    assert_close(out, expected, dtype, shape[1])


def _noncontiguous(rng, M, K, N, dtype):
    """(name, x, W) with x and W in various non-contiguous layouts."""
    xs = {
        "x_T_view": np.ascontiguousarray(uniform(rng, (K, M), dtype)).T,
        "x_slice": uniform(rng, (2 * M, 3 * K), dtype)[::2, ::3],
        "x_neg": uniform(rng, (M, K + 2), dtype)[::-1, 1:-1],
        "x_c": uniform(rng, (M, K), dtype),
    }
    Wb = 1 / np.sqrt(K)
    Ws = {
        "W_T_view": np.ascontiguousarray(uniform(rng, (K, N), dtype, -Wb, Wb)).T,
        "W_slice": uniform(rng, (3 * N, 2 * K), dtype, -Wb, Wb)[1::3, ::2],
        "W_neg": uniform(rng, (N, K), dtype, -Wb, Wb)[::-1, ::-1],
        "W_c": uniform(rng, (N, K), dtype, -Wb, Wb),
    }
    return [(xn, x, wn, W) for xn, x in xs.items() for wn, W in Ws.items()]


@pytest.mark.parametrize("act,slope", [("identity", 0.01), ("leaky_relu", 0.2),
                                       ("tanh", 0.01)], ids=["identity", "leaky", "tanh"])
def test_linear_noncontiguous_inputs(act, slope, dtype, engine, variant, rng):
    M, K, N = 11, 29, 19
    b = uniform(rng, N, dtype)
    for xn, x, wn, W in _noncontiguous(rng, M, K, N, dtype):
        msg = f"{xn}, {wn}"
        y = fastnn.linear_forward(x, W, b, act, negative_slope=slope)
        assert_close(y, ref.linear_forward(x, W, b, act, slope), dtype, K, err_msg=msg)
        g = uniform(rng, (2 * M, N), dtype)[::2]           # strided grad_out too
        got = fastnn.linear_backward(g, x, W, y, act, negative_slope=slope)
        expected = ref.linear_backward(g, x, W, y, act, slope)
        _check_backward(got, expected, dtype, M, K, N)


def test_linear_backward_noncontiguous_grad_out_and_y(dtype, engine, variant, rng):
    M, K, N = 9, 14, 23
    x, W, b = _layer(rng, (M, K, N), dtype)
    y = fastnn.linear_forward(x, W, b, "sigmoid")
    yF = np.asfortranarray(y)                          # non-unit column stride
    gF = np.asfortranarray(uniform(rng, (M, N), dtype))
    gneg = uniform(rng, (M, N), dtype)[::-1]
    for g in (gF, gneg):
        got = fastnn.linear_backward(g, x, W, yF, "sigmoid")
        _check_backward(got, ref.linear_backward(g, x, W, y, "sigmoid"), dtype, M, K, N)


def test_linear_forward_equals_gemm_bitwise(dtype, native, variant, rng):
    """linear_forward(x, W, b, act) is gemm(x, W.T, bias=b, act) on the same engine."""
    for shape in [(13, 37, 33), (7, 300, 20)]:
        x, W, b = _layer(rng, shape, dtype)
        for act, slope in ACT_SLOPES:
            y = fastnn.linear_forward(x, W, b, act, negative_slope=slope)
            g = fastnn.gemm(x, W, trans_b=True, bias=b, activation=act, negative_slope=slope)
            assert_bitwise_equal(y, g, act)


# ---------------------------------------------------------------- fused vs unfused
@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(5, 4, 3), (13, 37, 33), (24, 300, 64), (50, 20, 100)],
                         ids=lambda s: "x".join(map(str, s)))
def test_fused_equals_unfused_bitwise(shape, act, slope, dtype, native, variant, rng):
    x, W, b = _layer(rng, shape, dtype)
    x *= 3   # pre-activations on both sides of 0 and into the tails of sigmoid/tanh
    for bias in (b, None):
        fused = fastnn.linear_forward(x, W, bias, act, negative_slope=slope)
        z = fastnn.linear_forward(x, W, bias, "identity")
        unfused = fastnn.activation_forward(z, act, negative_slope=slope)
        assert_bitwise_equal(fused, unfused, f"{act}, bias={bias is not None}")
        # in place as well
        fastnn.activation_forward(z, act, z, negative_slope=slope)
        assert_bitwise_equal(fused, z, "in place")


# ---------------------------------------------------------------- backward
@pytest.mark.parametrize("grad_b", [True, False], ids=["grad_b", "no_grad_b"])
@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_linear_backward(shape, act, slope, grad_b, dtype, engine, variant, rng):
    M, K, N = shape
    x, W, b = _layer(rng, shape, dtype, bias=grad_b)
    y = fastnn.linear_forward(x, W, b, act, negative_slope=slope)
    g = uniform(rng, (M, N), dtype)
    got = fastnn.linear_backward(g, x, W, y, act, negative_slope=slope,
                                 compute_grad_b=grad_b)
    expected = ref.linear_backward(g, x, W, y, act, slope)
    _check_backward(got, expected, dtype, M, K, N, grad_b=grad_b)
    # inputs untouched
    np.testing.assert_array_equal(y, fastnn.linear_forward(x, W, b, act,
                                                           negative_slope=slope))


@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
def test_linear_backward_without_grad_x(act, slope, dtype, engine, variant, rng):
    M, K, N = 17, 40, 21
    x, W, b = _layer(rng, (M, K, N), dtype)
    y = fastnn.linear_forward(x, W, b, act, negative_slope=slope)
    g = uniform(rng, (M, N), dtype)
    expected = ref.linear_backward(g, x, W, y, act, slope)
    got = fastnn.linear_backward(g, x, W, y, act, negative_slope=slope, compute_grad_x=False)
    assert got[0] is None
    _check_backward(got, expected, dtype, M, K, N, grad_x=False)
    got = fastnn.linear_backward(g, x, W, y, act, negative_slope=slope, compute_grad_x=False,
                                 compute_grad_b=False)
    assert got[0] is None and got[2] is None
    _check_backward(got, expected, dtype, M, K, N, grad_x=False, grad_b=False)


@pytest.mark.parametrize("act,slope", [("identity", 0.01), ("relu", 0.01), ("tanh", 0.01)],
                         ids=["identity", "relu", "tanh"])
def test_linear_backward_accumulate(act, slope, dtype, engine, variant, rng):
    M, K, N = 19, 300, 35
    x, W, b = _layer(rng, (M, K, N), dtype)
    y = fastnn.linear_forward(x, W, b, act)
    g = uniform(rng, (M, N), dtype)
    ex, eW, eb = ref.linear_backward(g, x, W, y, act, slope)
    gW0 = uniform(rng, (N, K), dtype)
    gb0 = uniform(rng, N, dtype)
    gW, gb = gW0.copy(), gb0.copy()
    gx = np.full((M, K), np.nan, dtype)     # grad_x is overwritten, never accumulated
    res = fastnn.linear_backward(g, x, W, y, act, gx, gW, gb, accumulate=True)
    assert res[0] is gx and res[1] is gW and res[2] is gb
    assert_close(gx, ex, dtype, N)
    assert_close(gW, (gW0.astype(np.float64) + eW).astype(dtype), dtype, M)
    assert_close(gb, (gb0.astype(np.float64) + eb).astype(dtype), dtype, M)
    # a second call accumulates again (as over two micro-batches)
    fastnn.linear_backward(g, x, W, y, act, gx, gW, gb, accumulate=True)
    assert_close(gW, (gW0.astype(np.float64) + 2 * eW.astype(np.float64)).astype(dtype),
                 dtype, 2 * M)
    assert_close(gb, (gb0.astype(np.float64) + 2 * eb.astype(np.float64)).astype(dtype),
                 dtype, 2 * M)
    # accumulate without a bias gradient
    gW = gW0.copy()
    res = fastnn.linear_backward(g, x, W, y, act, None, gW, None, accumulate=True,
                                 compute_grad_b=False)
    assert res[2] is None and res[1] is gW
    assert_close(gW, (gW0.astype(np.float64) + eW).astype(dtype), dtype, M)


def test_linear_backward_overwrites_without_accumulate(dtype, engine, variant, rng):
    M, K, N = 8, 10, 12
    x, W, b = _layer(rng, (M, K, N), dtype)
    g = uniform(rng, (M, N), dtype)
    gx = np.full((M, K), np.nan, dtype)
    gW = np.full((N, K), np.nan, dtype)
    gb = np.full(N, np.nan, dtype)
    fastnn.linear_backward(g, x, W, None, "identity", gx, gW, gb)
    _check_backward((gx, gW, gb), ref.linear_backward(g, x, W, None), dtype, M, K, N)


@pytest.mark.parametrize("act", ["relu", "sigmoid", "identity"])
def test_linear_backward_workspace_reuse(act, dtype, engine, variant, rng):
    M, K, N = 23, 31, 37
    ws = np.full((M, N), np.nan, dtype)
    gx = np.empty((M, K), dtype)
    gW = np.empty((N, K), dtype)
    gb = np.empty(N, dtype)
    for step in range(3):
        x, W, b = _layer(rng, (M, K, N), dtype)
        y = fastnn.linear_forward(x, W, b, act)
        g = uniform(rng, (M, N), dtype)
        res = fastnn.linear_backward(g, x, W, y, act, gx, gW, gb, workspace=ws)
        assert res[0] is gx and res[1] is gW and res[2] is gb
        _check_backward(res, ref.linear_backward(g, x, W, y, act), dtype, M, K, N)
        if act != "identity":
            # the workspace holds dz = grad_out * act'(y)
            assert_close(ws, ref.activation_grad(g, y, act), dtype)


def test_linear_backward_is_deterministic(dtype, engine, variant, rng):
    M, K, N = 64, 300, 50
    x, W, b = _layer(rng, (M, K, N), dtype)
    y = fastnn.linear_forward(x, W, b, "tanh")
    g = uniform(rng, (M, N), dtype)
    first = fastnn.linear_backward(g, x, W, y, "tanh")
    second = fastnn.linear_backward(g, x, W, y, "tanh")
    for a, c in zip(first, second):
        assert_bitwise_equal(a, c)


@pytest.mark.parametrize("shape", [(0, 4, 3), (5, 0, 3), (5, 4, 0), (0, 0, 0), (0, 4, 0)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid"])
def test_linear_zero_sized(shape, act, dtype, engine, variant, rng):
    M, K, N = shape
    x, W, b = _layer(rng, shape, dtype)
    y = fastnn.linear_forward(x, W, b, act)
    assert y.shape == (M, N) and y.dtype == dtype
    assert_close(y, ref.linear_forward(x, W, b, act), dtype)
    g = uniform(rng, (M, N), dtype)
    got = fastnn.linear_backward(g, x, W, y, act)
    _check_backward(got, ref.linear_backward(g, x, W, y, act), dtype, M, K, N)
    # accumulate into existing gradients: an empty batch adds nothing
    gW0 = uniform(rng, (N, K), dtype)
    gb0 = uniform(rng, N, dtype)
    gW, gb = gW0.copy(), gb0.copy()
    fastnn.linear_backward(g, x, W, y, act, None, gW, gb, accumulate=True)
    ex, eW, eb = ref.linear_backward(g, x, W, y, act)
    assert_close(gW, (gW0.astype(np.float64) + eW).astype(dtype), dtype, M)
    assert_close(gb, (gb0.astype(np.float64) + eb).astype(dtype), dtype, M)


def test_linear_backward_bias_gradient_many_rows(dtype, engine, variant, rng):
    """grad_b over a batch longer than the 128-row reduction chunk and wider than one
    64-column block."""
    M, K, N = 1000, 3, 150
    x, W, b = _layer(rng, (M, K, N), dtype)
    g = uniform(rng, (M, N), dtype)
    _, _, gb = fastnn.linear_backward(g, x, W, None, "identity")
    assert_close(gb, g.astype(np.float64).sum(0).astype(dtype), dtype, M)


# ---------------------------------------------------------------- elementwise activations
@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 33), (300, 301)],
                         ids=lambda s: "x".join(map(str, s)))
def test_activation_forward_backward(shape, act, slope, dtype, engine, variant, rng):
    x = uniform(rng, shape, dtype, -6, 6)
    x.flat[::7] = 0
    y = fastnn.activation_forward(x, act, negative_slope=slope)
    assert_close(y, ref.activation(x, act, slope), dtype)
    g = uniform(rng, shape, dtype)
    d = fastnn.activation_backward(g, y, act, negative_slope=slope)
    assert_close(d, ref.activation_grad(g, y, act, slope), dtype)
    # in place (out is the input), and strided inputs
    xc = x.copy()
    assert fastnn.activation_forward(xc, act, xc, negative_slope=slope) is xc
    assert_bitwise_equal(xc, y)
    gc = g.copy()
    assert fastnn.activation_backward(gc, y, act, gc, negative_slope=slope) is gc
    assert_bitwise_equal(gc, d)
    assert_bitwise_equal(fastnn.activation_forward(np.asfortranarray(x), act,
                                                   negative_slope=slope), y)
    assert_bitwise_equal(fastnn.activation_backward(np.asfortranarray(g), np.asfortranarray(y),
                                                    act, negative_slope=slope), d)


def test_activation_nan_and_inf(dtype, variant):
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30]], dtype)
    for act, slope in ACT_SLOPES:
        got = fastnn.activation_forward(x, act, negative_slope=slope)
        assert_close(got, ref.activation(x, act, slope), dtype, err_msg=act)
        assert np.array_equal(np.isnan(got), np.isnan(x)), act


# ---------------------------------------------------------------- finite differences
def _away_from_kinks(rng, shape, dtype, act, slope):
    """A layer whose pre-activations stay >= 1e-3 away from 0 (where relu is not
    differentiable)."""
    for _ in range(100):
        x, W, b = _layer(rng, shape, dtype)
        z = ref.linear_forward(x, W, b)
        if np.min(np.abs(z)) > 1e-3:
            return x, W, b
    raise AssertionError("could not draw a layer away from the kinks")


@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
def test_linear_gradients_finite_differences(act, slope, engine, variant, rng):
    dt = np.dtype(np.float64)
    M, K, N = 5, 4, 3
    x, W, b = _away_from_kinks(rng, (M, K, N), dt, act, slope)
    R = uniform(rng, (M, N), dt)

    def loss(x_, W_, b_):
        return float(np.sum(fastnn.linear_forward(x_, W_, b_, act, negative_slope=slope) * R))

    y = fastnn.linear_forward(x, W, b, act, negative_slope=slope)
    gx, gW, gb = fastnn.linear_backward(R, x, W, y, act, negative_slope=slope)
    eps = 1e-6
    for name, param, grad in (("x", x, gx), ("W", W, gW), ("b", b, gb)):
        numeric = np.zeros_like(param)
        for idx in np.ndindex(param.shape):
            old = param[idx]
            param[idx] = old + eps
            up = loss(x, W, b)
            param[idx] = old - eps
            down = loss(x, W, b)
            param[idx] = old
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7,
                                   err_msg=f"d loss / d {name} ({act})")


# ---------------------------------------------------------------- PyTorch parity
def _torch_act(torch, z, act, slope):
    F = torch.nn.functional
    return {"identity": lambda t: t, "relu": F.relu,
            "leaky_relu": lambda t: F.leaky_relu(t, negative_slope=slope),
            "sigmoid": torch.sigmoid, "tanh": torch.tanh}[act](z)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act,slope", ACT_SLOPES, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(5, 4, 3), (32, 64, 10), (13, 300, 33)],
                         ids=lambda s: "x".join(map(str, s)))
def test_torch_parity(shape, act, slope, bias, dtype, engine, rng):
    torch = pytest.importorskip("torch")
    M, K, N = shape
    x, W, b = _layer(rng, shape, dtype, bias)
    R = uniform(rng, (M, N), dtype)
    tx = torch.tensor(x, requires_grad=True)
    tW = torch.tensor(W, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    ty = _torch_act(torch, torch.nn.functional.linear(tx, tW, tb), act, slope)
    ty.backward(torch.tensor(R))
    y = fastnn.linear_forward(x, W, b, act, negative_slope=slope)
    assert_close(y, ty.detach().numpy(), dtype, K)
    gx, gW, gb = fastnn.linear_backward(R, x, W, y, act, negative_slope=slope,
                                        compute_grad_b=bias)
    assert_close(gx, tx.grad.numpy(), dtype, N, err_msg="grad_x")
    assert_close(gW, tW.grad.numpy(), dtype, M, err_msg="grad_W")
    if bias:
        assert_close(gb, tb.grad.numpy(), dtype, M, err_msg="grad_b")
    else:
        assert gb is None


# ---------------------------------------------------------------- property test
@pytest.mark.parametrize("variant_name", VARIANTS)
@pytest.mark.parametrize("engine_name", ENGINES)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(M=st.integers(0, 30), K=st.integers(0, 40), N=st.integers(0, 40),
       dt=st.sampled_from(DTYPES), act_slope=st.sampled_from(ACT_SLOPES),
       use_bias=st.booleans(), grad_x=st.booleans(), grad_b=st.booleans(),
       accumulate=st.booleans(), give_outputs=st.booleans(), lay_x=layouts(),
       lay_W=layouts(), lay_g=layouts(), seed=st.integers(0, 2**32 - 1))
def test_linear_property(engine_name, variant_name, M, K, N, dt, act_slope, use_bias, grad_x,
                         grad_b, accumulate, give_outputs, lay_x, lay_W, lay_g, seed):
    fastnn.set_kernel_variant(variant_name)
    act, slope = act_slope
    rng = np.random.default_rng(seed)
    x = laid_out(rng, (M, K), dt, lay_x)
    W = laid_out(rng, (N, K), dt, lay_W)
    b = uniform(rng, N, dt) if use_bias else None
    y = fastnn.linear_forward(x, W, b, act, negative_slope=slope, engine=engine_name)
    assert_close(y, ref.linear_forward(x, W, b, act, slope), dt, K)
    g = laid_out(rng, (M, N), dt, lay_g)
    gW0 = uniform(rng, (N, K), dt)
    gb0 = uniform(rng, N, dt)
    outs = {}
    if accumulate or give_outputs:
        outs = dict(grad_W=gW0.copy(), grad_b=gb0.copy() if grad_b else None,
                    grad_x=np.full((M, K), np.nan, dt) if grad_x and give_outputs else None)
    got = fastnn.linear_backward(g, x, W, y, act, accumulate=accumulate, compute_grad_x=grad_x,
                                 compute_grad_b=grad_b, negative_slope=slope,
                                 engine=engine_name, **outs)
    ex, eW, eb = ref.linear_backward(g, x, W, y, act, slope)
    if accumulate:
        eW = (gW0.astype(np.float64) + eW).astype(dt)
        eb = (gb0.astype(np.float64) + eb).astype(dt)
    _check_backward(got, (ex, eW, eb), dt, M, K, N, grad_x=grad_x, grad_b=grad_b)
    if outs:
        assert got[1] is outs["grad_W"]
        if grad_b:
            assert got[2] is outs["grad_b"]
