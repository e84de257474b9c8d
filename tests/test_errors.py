"""Bad input raises TypeError/ValueError naming the function and what was expected/given,
before any kernel runs."""
import re

import numpy as np
import pytest

import fastnn

F64 = np.float64
F32 = np.float32


def _x(*shape, dtype=F64):
    return np.ones(shape, dtype)


def _raises(exc, fn_name, *fragments):
    """pytest.raises matching 'fastnn.<fn>: ...' followed by each fragment, in order."""
    pattern = re.escape(fn_name) + r":.*" + r".*".join(re.escape(f) for f in fragments)
    return pytest.raises(exc, match=pattern)


G = "fastnn.gemm"
LF = "fastnn.linear_forward"
LB = "fastnn.linear_backward"
AF = "fastnn.activation_forward"
AB = "fastnn.activation_backward"


# ---------------------------------------------------------------- operand types and shapes
def test_gemm_wrong_ndim():
    with _raises(ValueError, G, "a must be 2-D", "got 1-D", "(3,)"):
        fastnn.gemm(_x(3), _x(3, 2))
    with _raises(ValueError, G, "b must be 2-D", "got 3-D", "(3, 2, 1)"):
        fastnn.gemm(_x(2, 3), _x(3, 2, 1))
    with _raises(ValueError, G, "a must be 2-D", "got 0-D"):
        fastnn.gemm(np.array(1.0), _x(1, 1))


@pytest.mark.parametrize("ta,tb,sa,sb,opa,opb", [
    (False, False, (3, 4), (5, 2), (3, 4), (5, 2)),
    (True, False, (3, 4), (5, 2), (4, 3), (5, 2)),
    (False, True, (3, 4), (2, 5), (3, 4), (5, 2)),
    (True, True, (4, 3), (4, 2), (3, 4), (2, 4)),
])
def test_gemm_inner_dimension_mismatch(ta, tb, sa, sb, opa, opb):
    with _raises(ValueError, G, "inner dimensions differ", f"op(a) is {opa}",
                 f"op(b) is {opb}"):
        fastnn.gemm(_x(*sa), _x(*sb), trans_a=ta, trans_b=tb)


def test_gemm_mixed_dtypes():
    with _raises(TypeError, G, "b has dtype float32", "float64"):
        fastnn.gemm(_x(2, 3), _x(3, 2, dtype=F32))
    with _raises(TypeError, G, "b has dtype float64", "float32"):
        fastnn.gemm(_x(2, 3, dtype=F32), _x(3, 2))
    with _raises(TypeError, G, "bias has dtype float32", "float64"):
        fastnn.gemm(_x(2, 3), _x(3, 2), bias=_x(2, dtype=F32))


@pytest.mark.parametrize("bad", [np.int64, np.int32, np.float16, np.complex128, np.complex64,
                                 np.longdouble, bool, object])
def test_gemm_unsupported_dtypes(bad):
    name = np.dtype(bad).name
    with _raises(TypeError, G, "a must have dtype float32 or float64", f"got {name}"):
        fastnn.gemm(np.ones((2, 3), bad), _x(3, 2))
    with _raises(TypeError, G, "b must have dtype float32 or float64", f"got {name}"):
        fastnn.gemm(_x(2, 3), np.ones((3, 2), bad))


@pytest.mark.parametrize("bad", [[[1.0, 2.0]], 3.0, None, "a", np.float64(2.0)],
                         ids=["list", "float", "None", "str", "numpy_scalar"])
def test_gemm_non_ndarray(bad):
    with _raises(TypeError, G, "a must be a numpy.ndarray", f"got {type(bad).__name__}"):
        fastnn.gemm(bad, _x(2, 2))
    with _raises(TypeError, G, "b must be a numpy.ndarray", f"got {type(bad).__name__}"):
        fastnn.gemm(_x(2, 2), bad)


def test_gemm_dimension_too_large():
    huge = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(2**31, 1), strides=(0, 8))
    with _raises(ValueError, G, "a dimension exceeds 2**31-1", "(2147483648, 1)"):
        fastnn.gemm(huge, _x(1, 1))


# ---------------------------------------------------------------- out
def test_gemm_out_wrong_shape():
    with _raises(ValueError, G, "out must have shape (2, 4)", "got (4, 2)"):
        fastnn.gemm(_x(2, 3), _x(3, 4), _x(4, 2))
    with _raises(ValueError, G, "out must have shape (2, 4)", "got (8,)"):
        fastnn.gemm(_x(2, 3), _x(3, 4), _x(8))


def test_gemm_out_wrong_dtype():
    with _raises(TypeError, G, "out must have dtype float64", "got float32"):
        fastnn.gemm(_x(2, 3), _x(3, 4), _x(2, 4, dtype=F32))
    with _raises(TypeError, G, "out must have dtype float32", "got int64"):
        fastnn.gemm(_x(2, 3, dtype=F32), _x(3, 4, dtype=F32), np.ones((2, 4), np.int64))
    with _raises(TypeError, G, "out must be a numpy.ndarray", "got list"):
        fastnn.gemm(_x(2, 3), _x(3, 4), [[0.0] * 4] * 2)


def test_gemm_out_read_only():
    out = _x(2, 4)
    out.setflags(write=False)
    with _raises(ValueError, G, "out is read-only"):
        fastnn.gemm(_x(2, 3), _x(3, 4), out)
    with _raises(ValueError, G, "out is read-only"):
        fastnn.gemm(_x(2, 3), _x(3, 4), np.broadcast_to(_x(1, 4), (2, 4)))


@pytest.mark.parametrize("make", [
    lambda: np.asfortranarray(_x(3, 4)),
    lambda: _x(3, 8)[:, ::2],
    lambda: _x(3, 4)[:, ::-1],
], ids=["fortran", "step2", "reversed"])
def test_gemm_out_non_unit_column_stride(make):
    out = make()
    with _raises(ValueError, G, "out needs a unit column stride", f"strides {out.strides}"):
        fastnn.gemm(_x(3, 2), _x(2, 4), out)


def test_gemm_out_rows_overlap_or_reversed():
    with _raises(ValueError, G, "out rows overlap or run backwards"):
        fastnn.gemm(_x(3, 2), _x(2, 4), _x(3, 4)[::-1])
    overlapping = np.lib.stride_tricks.as_strided(_x(20), shape=(3, 4), strides=(8, 8))
    with _raises(ValueError, G, "out rows overlap or run backwards"):
        fastnn.gemm(_x(3, 2), _x(2, 4), overlapping)


def test_gemm_out_unaligned():
    raw = np.zeros(8 * 8 + 1, np.uint8)
    out = np.frombuffer(raw.data, F64, count=8, offset=1).reshape(2, 4)
    assert not out.flags.aligned
    with _raises(ValueError, G, "out is not aligned"):
        fastnn.gemm(_x(2, 3), _x(3, 4), out)


def test_gemm_out_shares_memory_with_input():
    buf = np.ones((4, 4))
    with _raises(ValueError, G, "out shares memory with a"):
        fastnn.gemm(buf, _x(4, 4), buf)
    with _raises(ValueError, G, "out shares memory with b"):
        fastnn.gemm(_x(4, 4), buf.T, buf)
    wide = np.ones((4, 8))
    with _raises(ValueError, G, "out shares memory with a"):
        fastnn.gemm(wide[:, 4:], _x(4, 4), wide[:, :4])     # interleaved rows
    bias_buf = np.ones((2, 4))
    with _raises(ValueError, G, "out shares memory with bias"):
        fastnn.gemm(_x(1, 3), _x(3, 4), bias_buf[:1], bias=bias_buf[0])


def test_gemm_beta_without_out():
    with _raises(ValueError, G, "beta=0.5 needs an `out` array"):
        fastnn.gemm(_x(2, 3), _x(3, 4), beta=0.5)


def test_gemm_bias_wrong_length():
    with _raises(ValueError, G, "bias must have shape (4,)", "got (3,)"):
        fastnn.gemm(_x(2, 3), _x(3, 4), bias=_x(3))
    with _raises(ValueError, G, "bias must be 1-D", "got 2-D"):
        fastnn.gemm(_x(2, 3), _x(3, 4), bias=_x(1, 4))
    with _raises(ValueError, G, "bias must have shape (4,)", "got (2,)"):
        fastnn.gemm(_x(2, 3), _x(3, 4), bias=_x(2), trans_b=False)


@pytest.mark.parametrize("act", ["softmax", "", "relu6", None, 3])
def test_unknown_activation(act):
    with _raises(ValueError, G, "unknown activation", repr(act), "expected one of",
                 "'identity'"):
        fastnn.gemm(_x(2, 3), _x(3, 4), activation=act)
    with _raises(ValueError, LF, "unknown activation", repr(act)):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), None, act)
    with _raises(ValueError, LB, "unknown activation", repr(act)):
        fastnn.linear_backward(_x(2, 4), _x(2, 3), _x(4, 3), _x(2, 4), act)
    with _raises(ValueError, AF, "unknown activation", repr(act)):
        fastnn.activation_forward(_x(2, 3), act)
    with _raises(ValueError, AB, "unknown activation", repr(act)):
        fastnn.activation_backward(_x(2, 3), _x(2, 3), act)


@pytest.mark.parametrize("engine", ["mkl", "", "Native ", 1])
def test_unknown_engine(engine):
    with _raises(ValueError, G, "engine must be one of", "'native'", "'blas'", repr(engine)):
        fastnn.gemm(_x(2, 3), _x(3, 4), engine=engine)
    with _raises(ValueError, LF, "engine must be one of", repr(engine)):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), engine=engine)
    with _raises(ValueError, LB, "engine must be one of", repr(engine)):
        fastnn.linear_backward(_x(2, 4), _x(2, 3), _x(4, 3), engine=engine)


@pytest.mark.parametrize("n", [0, -1, -4])
def test_bad_n_threads(n):
    with _raises(ValueError, G, "n_threads must be >= 1 or None", f"got {n}"):
        fastnn.gemm(_x(2, 3), _x(3, 4), n_threads=n)
    with _raises(ValueError, LF, "n_threads must be >= 1 or None", f"got {n}"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), n_threads=n)
    with _raises(ValueError, LB, "n_threads must be >= 1 or None", f"got {n}"):
        fastnn.linear_backward(_x(2, 4), _x(2, 3), _x(4, 3), n_threads=n)
    with _raises(ValueError, AF, "n_threads must be >= 1 or None", f"got {n}"):
        fastnn.activation_forward(_x(2, 3), "relu", n_threads=n)
    with _raises(ValueError, AB, "n_threads must be >= 1 or None", f"got {n}"):
        fastnn.activation_backward(_x(2, 3), _x(2, 3), "relu", n_threads=n)


@pytest.mark.parametrize("n,exc", [("2", TypeError), (2.5, TypeError), (None, None),
                                   (2**40, ValueError)], ids=["str", "float", "None", "huge"])
def test_n_threads_type_and_range(n, exc):
    """n_threads follows set_num_threads: an int (or None); a float or str is not silently
    truncated/parsed, and a count beyond a C int is a clear ValueError, not OverflowError."""
    a, b = _x(2, 3), _x(3, 4)
    if exc is None:
        np.testing.assert_array_equal(fastnn.gemm(a, b, n_threads=n), np.full((2, 4), 3.0))
        return
    with _raises(exc, G, "n_threads"):
        fastnn.gemm(a, b, n_threads=n)
    with _raises(exc, LB, "n_threads"):
        fastnn.linear_backward(_x(2, 4), a, _x(4, 3), n_threads=n)


def test_set_num_threads_huge():
    with _raises(ValueError, "fastnn.set_num_threads"):
        fastnn.set_num_threads(2**40)


@pytest.mark.parametrize("slope", [np.nan, np.inf, -np.inf])
def test_non_finite_negative_slope(slope):
    with _raises(ValueError, G, "negative_slope must be finite"):
        fastnn.gemm(_x(2, 3), _x(3, 4), activation="leaky_relu", negative_slope=slope)
    with _raises(ValueError, LF, "negative_slope must be finite"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), None, "leaky_relu", negative_slope=slope)


# ---------------------------------------------------------------- linear_forward
def test_linear_forward_errors():
    with _raises(ValueError, LF, "x has 3 features", "(2, 3)", "W expects 5", "(4, 5)"):
        fastnn.linear_forward(_x(2, 3), _x(4, 5))
    with _raises(ValueError, LF, "x must be 2-D", "got 1-D"):
        fastnn.linear_forward(_x(3), _x(4, 3))
    with _raises(ValueError, LF, "W must be 2-D", "got 1-D"):
        fastnn.linear_forward(_x(2, 3), _x(3))
    with _raises(TypeError, LF, "W has dtype float32", "float64"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3, dtype=F32))
    with _raises(TypeError, LF, "x must have dtype float32 or float64", "got int64"):
        fastnn.linear_forward(np.ones((2, 3), np.int64), _x(4, 3))
    with _raises(TypeError, LF, "x must have dtype float32 or float64", "got float16"):
        fastnn.linear_forward(np.ones((2, 3), np.float16), _x(4, 3, dtype=np.float16))
    with _raises(TypeError, LF, "x must be a numpy.ndarray", "got list"):
        fastnn.linear_forward([[1.0, 2.0, 3.0]], _x(4, 3))
    with _raises(ValueError, LF, "b must have shape (4,)", "got (3,)"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), _x(3))
    with _raises(TypeError, LF, "b has dtype float32", "float64"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), _x(4, dtype=F32))
    with _raises(ValueError, LF, "out must have shape (2, 4)", "got (2, 3)"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), None, "identity", _x(2, 3))
    with _raises(TypeError, LF, "out must have dtype float64", "got float32"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), None, "identity", _x(2, 4, dtype=F32))
    x = _x(4, 4)
    with _raises(ValueError, LF, "out shares memory with x"):
        fastnn.linear_forward(x, _x(4, 4), None, "identity", x)
    ro = _x(2, 4)
    ro.setflags(write=False)
    with _raises(ValueError, LF, "out is read-only"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), None, "identity", ro)
    with _raises(ValueError, LF, "out needs a unit column stride"):
        fastnn.linear_forward(_x(2, 3), _x(4, 3), None, "identity", np.asfortranarray(_x(2, 4)))


# ---------------------------------------------------------------- linear_backward
def _lb_args(M=2, K=3, N=4, dtype=F64):
    return _x(M, N, dtype=dtype), _x(M, K, dtype=dtype), _x(N, K, dtype=dtype)


def test_linear_backward_shape_errors():
    g, x, W = _lb_args()
    with _raises(ValueError, LB, "x has 3 features", "W expects 5"):
        fastnn.linear_backward(g, x, _x(4, 5))
    with _raises(ValueError, LB, "grad_out must have shape (2, 4)", "got (2, 5)"):
        fastnn.linear_backward(_x(2, 5), x, W)
    with _raises(ValueError, LB, "grad_out must be 2-D", "got 1-D"):
        fastnn.linear_backward(_x(8), x, W)
    with _raises(ValueError, LB, "y_saved must have shape (2, 4)", "got (4, 2)"):
        fastnn.linear_backward(g, x, W, _x(4, 2), "relu")
    with _raises(ValueError, LB, "grad_W must have shape (4, 3)", "got (3, 4)"):
        fastnn.linear_backward(g, x, W, None, "identity", None, _x(3, 4))
    with _raises(ValueError, LB, "grad_b must have shape (4,)", "got (3,)"):
        fastnn.linear_backward(g, x, W, None, "identity", None, None, _x(3))
    with _raises(ValueError, LB, "grad_x must have shape (2, 3)", "got (3, 2)"):
        fastnn.linear_backward(g, x, W, None, "identity", _x(3, 2))
    with _raises(ValueError, LB, "workspace must have shape (2, 4)", "got (4, 2)"):
        fastnn.linear_backward(g, x, W, _x(2, 4), "sigmoid", workspace=_x(4, 2))


def test_linear_backward_dtype_errors():
    g, x, W = _lb_args()
    with _raises(TypeError, LB, "grad_out has dtype float32", "float64"):
        fastnn.linear_backward(g.astype(F32), x, W)
    with _raises(TypeError, LB, "W has dtype float32", "float64"):
        fastnn.linear_backward(g, x, W.astype(F32))
    with _raises(TypeError, LB, "y_saved has dtype float32", "float64"):
        fastnn.linear_backward(g, x, W, _x(2, 4, dtype=F32), "tanh")
    with _raises(TypeError, LB, "grad_W must have dtype float64", "got float32"):
        fastnn.linear_backward(g, x, W, None, "identity", None, _x(4, 3, dtype=F32))
    with _raises(TypeError, LB, "grad_b must have dtype float64", "got float32"):
        fastnn.linear_backward(g, x, W, None, "identity", None, None, _x(4, dtype=F32))
    with _raises(TypeError, LB, "x must have dtype float32 or float64", "got complex128"):
        fastnn.linear_backward(g, x.astype(np.complex128), W)
    with _raises(TypeError, LB, "grad_out must be a numpy.ndarray", "got list"):
        fastnn.linear_backward(g.tolist(), x, W)


def test_linear_backward_accumulate_without_grad_W():
    g, x, W = _lb_args()
    with _raises(ValueError, LB, "accumulate=True needs grad_W"):
        fastnn.linear_backward(g, x, W, accumulate=True)
    with _raises(ValueError, LB, "accumulate=True needs grad_W (and grad_b)"):
        fastnn.linear_backward(g, x, W, None, "identity", None, _x(4, 3), None,
                               accumulate=True)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activation_backward_without_y_saved(act):
    g, x, W = _lb_args()
    with _raises(ValueError, LB, f"activation {act!r} needs y_saved"):
        fastnn.linear_backward(g, x, W, None, act)
    with _raises(TypeError, AB, "y_saved must be a numpy.ndarray", "got NoneType"):
        fastnn.activation_backward(g, None, act)


def test_leaky_relu_backward_negative_slope():
    g, x, W = _lb_args()
    with _raises(ValueError, LB, "leaky_relu backward needs negative_slope >= 0", "got -0.1"):
        fastnn.linear_backward(g, x, W, g, "leaky_relu", negative_slope=-0.1)
    with _raises(ValueError, AB, "leaky_relu backward needs negative_slope >= 0", "got -2.0"):
        fastnn.activation_backward(g, g.copy(), "leaky_relu", negative_slope=-2.0)
    # the forward accepts a negative slope (it is well defined)
    y = fastnn.activation_forward(np.array([[-1.0, 2.0]]), "leaky_relu", negative_slope=-0.5)
    np.testing.assert_array_equal(y, [[0.5, 2.0]])


def test_linear_backward_output_aliasing():
    g, x, W = _lb_args(M=4, K=4, N=4)
    with _raises(ValueError, LB, "grad_W shares memory with W"):
        fastnn.linear_backward(g, x, W, None, "identity", None, W)
    with _raises(ValueError, LB, "grad_x shares memory with x"):
        fastnn.linear_backward(g, x, W, None, "identity", x)
    gW = _x(4, 4)
    with _raises(ValueError, LB, "grad_x shares memory with grad_W"):
        fastnn.linear_backward(g, x, W, None, "identity", gW, gW)
    with _raises(ValueError, LB, "grad_b shares memory with grad_W"):
        fastnn.linear_backward(g, x, W, None, "identity", None, gW, gW[0])
    with _raises(ValueError, LB, "grad_W shares memory with grad_out"):
        fastnn.linear_backward(g, x, W, None, "identity", None, g)
    y = _x(4, 4)
    with _raises(ValueError, LB, "workspace shares memory with x"):
        fastnn.linear_backward(g, x, W, y, "relu", workspace=x)
    ws = _x(4, 4)
    with _raises(ValueError, LB, "grad_W shares memory with workspace"):
        fastnn.linear_backward(g, x, W, y, "relu", None, ws, workspace=ws)
    with _raises(ValueError, LB, "grad_W shares memory with y_saved"):
        fastnn.linear_backward(g, x, W, y, "relu", None, y)


def test_linear_backward_workspace_aliasing_inputs():
    """The workspace is written (dz) while grad_out and y_saved are read: sharing memory
    with either must be refused like every other output/input overlap (a partial overlap
    silently gave wrong gradients; an exact one silently overwrote the caller's array)."""
    M, K, N = 4, 3, 5
    g, x, W = _lb_args(M, K, N)
    y = np.full((M, N), 0.5)
    buf = np.full((M, N + 1), 0.5)
    with _raises(ValueError, LB, "workspace shares memory with y_saved"):
        fastnn.linear_backward(g, x, W, buf[:, :N], "sigmoid", workspace=buf[:, 1:])
    with _raises(ValueError, LB, "workspace shares memory with y_saved"):
        fastnn.linear_backward(g, x, W, y, "sigmoid", workspace=y)
    g2 = g.copy()
    with _raises(ValueError, LB, "workspace shares memory with grad_out"):
        fastnn.linear_backward(g2, x, W, y, "sigmoid", workspace=g2)
    np.testing.assert_array_equal(g2, g)


def test_linear_backward_read_only_and_strided_outputs():
    g, x, W = _lb_args()
    ro = _x(4, 3)
    ro.setflags(write=False)
    with _raises(ValueError, LB, "grad_W is read-only"):
        fastnn.linear_backward(g, x, W, None, "identity", None, ro)
    with _raises(ValueError, LB, "grad_b must be contiguous"):
        fastnn.linear_backward(g, x, W, None, "identity", None, None, _x(8)[::2])
    with _raises(ValueError, LB, "grad_x needs a unit column stride"):
        fastnn.linear_backward(g, x, W, None, "identity", np.asfortranarray(_x(2, 3)))


# ---------------------------------------------------------------- elementwise
def test_activation_forward_backward_errors():
    with _raises(ValueError, AF, "x must be 2-D", "got 1-D"):
        fastnn.activation_forward(_x(3), "relu")
    with _raises(TypeError, AF, "x must have dtype float32 or float64", "got int64"):
        fastnn.activation_forward(np.ones((2, 2), np.int64), "relu")
    with _raises(ValueError, AF, "out must have shape (2, 3)", "got (3, 2)"):
        fastnn.activation_forward(_x(2, 3), "relu", _x(3, 2))
    with _raises(TypeError, AF, "out must have dtype float64", "got float32"):
        fastnn.activation_forward(_x(2, 3), "relu", _x(2, 3, dtype=F32))
    x = _x(2, 6)
    with _raises(ValueError, AF, "out shares memory with x"):
        fastnn.activation_forward(x[:, :3], "relu", x[:, 3:])
    with _raises(ValueError, AB, "y_saved has shape (3, 2)", "grad_out has (2, 3)"):
        fastnn.activation_backward(_x(2, 3), _x(3, 2), "relu")
    with _raises(TypeError, AB, "y_saved has dtype float32", "float64"):
        fastnn.activation_backward(_x(2, 3), _x(2, 3, dtype=F32), "relu")
    with _raises(ValueError, AB, "out must have shape (2, 3)", "got (2, 2)"):
        fastnn.activation_backward(_x(2, 3), _x(2, 3), "relu", _x(2, 2))


def test_activation_in_place_read_only():
    """out=x is allowed in place, but not into a read-only array: that must be the same
    clear 'out is read-only' error as any other output, naming the function."""
    x = _x(2, 3)
    x.setflags(write=False)
    with _raises(ValueError, AF, "out is read-only"):
        fastnn.activation_forward(x, "relu", x)
    with _raises(ValueError, AB, "out is read-only"):
        fastnn.activation_backward(x, _x(2, 3), "relu", x)


def test_non_native_byte_order_rejected():
    with _raises(TypeError, G, "a must have dtype float32 or float64", ">f8"):
        fastnn.gemm(np.ones((2, 2), ">f8"), _x(2, 2))


def test_failed_call_leaves_out_untouched():
    out = np.full((2, 4), 5.0)
    with pytest.raises(ValueError):
        fastnn.gemm(_x(2, 3), _x(3, 4), out, bias=_x(3))
    np.testing.assert_array_equal(out, 5.0)
