"""Core guarantees of the module layer: fused Sequential == unfused modules bitwise,
buffer reuse and eval mode, thread independence, gradient checks, error messages."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as ref
from _util import assert_close

ACTS = [fnn.Sigmoid, fnn.ReLU, fnn.Tanh, lambda: fnn.LeakyReLU(0.01),
        lambda: fnn.LeakyReLU(0.2)]
ACT_IDS = ["sigmoid", "relu", "tanh", "leaky0.01", "leaky0.2"]


def mlp(act, dtype, sizes=(13, 17, 11, 5), bias=True, seed=0):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(fnn.Linear(sizes[i], sizes[i + 1], bias=bias, dtype=dtype, rng=seed + i))
        if i < len(sizes) - 2:
            layers.append(act())
    return fnn.Sequential(*layers)


def run_fused(model, x, g):
    model.zero_grad()
    out = model(x).copy()
    gx = model.backward(g).copy()
    return out, gx, [p.grad.copy() for p in model.parameters()]


def run_unfused(model, x, g):
    """The same network, module by module (no fused steps)."""
    model.zero_grad()
    h = x
    for m in model:
        h = m.forward(h)
    out = h.copy()
    for m in reversed(list(model)):
        g = m.backward(g)
    return out, g.copy(), [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("bias", [True, False])
def test_fused_sequential_bitwise_equals_unfused(act, bias, dtype, engine, rng):
    model = mlp(act, dtype, sizes=(37, 45, 29, 7), bias=bias)
    x = rng.standard_normal((23, 37)).astype(dtype)
    g = rng.standard_normal((23, 7)).astype(dtype)
    a = run_fused(model, x, g)
    b = run_unfused(model, x, g)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for ga, gb in zip(a[2], b[2]):
        np.testing.assert_array_equal(ga, gb)


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_sequential_matches_reference(act, dtype, rng):
    model = mlp(act, dtype)
    x = rng.standard_normal((9, 13)).astype(dtype)
    g = rng.standard_normal((9, 5)).astype(dtype)
    name = type(act()).__name__
    names = {"Sigmoid": "sigmoid", "ReLU": "relu", "Tanh": "tanh", "LeakyReLU": "leaky_relu"}
    a = names[name]
    slope = getattr(act(), "negative_slope", 0.01)
    L = [m for m in model if isinstance(m, fnn.Linear)]
    hs = [x]
    for i, lin in enumerate(L):
        hs.append(ref.linear_forward(hs[-1], lin.weight.data, lin.bias.data,
                                     a if i < len(L) - 1 else "identity", slope))
    out = model(x)
    assert_close(out, hs[-1], dtype, k=17)
    gx = model.backward(g)
    gg = g
    grads = []
    for i in range(len(L) - 1, -1, -1):
        gg, gW, gb = ref.linear_backward(gg, hs[i], L[i].weight.data, hs[i + 1],
                                         a if i < len(L) - 1 else "identity", slope)
        grads.append((L[i], gW, gb))
    assert_close(gx, gg, dtype, k=17)
    for lin, gW, gb in grads:
        assert_close(lin.weight.grad, gW, dtype, k=9)
        assert_close(lin.bias.grad, gb, dtype, k=9)


def test_buffers_are_reused_in_training_and_fresh_in_eval(rng):
    model = mlp(fnn.ReLU, np.float32)
    x = rng.standard_normal((8, 13)).astype(np.float32)
    o1 = model(x)
    g1 = model.backward(np.ones_like(o1))
    o2 = model(x)
    g2 = model.backward(np.ones_like(o2))
    assert o1 is o2 and g1 is g2
    x2 = rng.standard_normal((3, 13)).astype(np.float32)
    assert model(x2).shape == (3, 5)
    model.eval()
    e1, e2 = model(x), model(x)
    assert e1 is not e2
    np.testing.assert_array_equal(e1, e2)
    with pytest.raises(RuntimeError, match="backward"):
        model.backward(np.ones_like(e1))
    model.train()
    np.testing.assert_array_equal(model(x), e1)


@pytest.mark.parametrize("mod", [lambda: fnn.Linear(3, 2), fnn.ReLU, fnn.Sigmoid,
                                 lambda: mlp(fnn.Tanh, np.float32)])
def test_backward_before_forward_raises(mod):
    m = mod()
    with pytest.raises(RuntimeError, match="before"):
        m.backward(np.ones((2, 2), np.float32))


def test_own_output_fed_back_in(rng):
    lin = fnn.Linear(6, 6, dtype=np.float64, rng=1)
    x = rng.standard_normal((4, 6))
    y = lin(x)
    expect = ref.linear_forward(y.copy(), lin.weight.data, lin.bias.data)
    z = lin(y)
    np.testing.assert_allclose(z, expect, rtol=1e-12, atol=1e-14)


def test_shared_linear_in_sequential_accumulates(rng):
    lin = fnn.Linear(5, 5, dtype=np.float64, rng=3)
    model = fnn.Sequential(lin, fnn.Tanh(), lin)
    assert len(list(model.parameters())) == 2
    fnn.gradcheck(model, rng.standard_normal((4, 5)))


def test_thread_count_does_not_change_results(threads, rng):
    model = mlp(fnn.ReLU, np.float32, sizes=(512, 512, 256, 10))
    x = rng.standard_normal((256, 512)).astype(np.float32)
    g = rng.standard_normal((256, 10)).astype(np.float32)
    res = []
    for n in (1, 2):
        fnn.set_num_threads(n)
        res.append(run_fused(model, x, g))
    for a, b in zip(res[0][:2], res[1][:2]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(res[0][2], res[1][2]):
        np.testing.assert_array_equal(a, b)


def test_noncontiguous_input_no_difference(rng):
    model = mlp(fnn.Sigmoid, np.float64)
    big = rng.standard_normal((13, 18))
    xs = [big[:9, :13], big[::-1][:9, :13], np.asfortranarray(big[:9, :13]),
          rng.standard_normal((9, 26))[:, ::2]]
    for x in xs:
        a = model(x).copy()
        b = model(np.ascontiguousarray(x)).copy()
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("act", ACTS + [lambda: fnn.LeakyReLU(-0.3)],
                         ids=ACT_IDS + ["leaky-0.3"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_mlp(act, bias, rng):
    model = mlp(act, np.float64, sizes=(5, 6, 4, 3), bias=bias)
    x = rng.standard_normal((7, 5))
    report = fnn.gradcheck(model, x)
    names = [e["name"] for e in report.entries]
    assert names[0] == "input 0"
    assert set(names[1:]) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("act", ACTS + [lambda: fnn.LeakyReLU(-0.3), fnn.Identity],
                         ids=ACT_IDS + ["leaky-0.3", "identity"])
def test_gradcheck_activation_any_shape(act, rng):
    x = rng.standard_normal((3, 4, 5))
    x += np.sign(x) * 0.1                 # away from the kink at 0
    fnn.gradcheck(act(), x)


@pytest.mark.parametrize("loss,target", [
    (fnn.MSELoss(), "float"), (fnn.MSELoss("sum"), "float"), (fnn.CrossEntropyLoss(), "int"),
    (fnn.SVMLoss(margin=0.5), "int")])
def test_gradcheck_losses(loss, target, rng):
    s = rng.standard_normal((6, 4))
    t = rng.standard_normal((6, 4)) if target == "float" else rng.integers(0, 4, 6)
    fnn.gradcheck(loss, s, t)


class _Doubler(fnn.Module):
    """A gate with a wrong backward: returns twice the true gradient."""

    def forward(self, x):
        self.x = x
        return 3.0 * x

    def backward(self, g, input_grad=True):
        return 6.0 * g


def test_gradcheck_catches_wrong_gradient(rng):
    with pytest.raises(fnn.GradcheckError, match=r"input 0.*index"):
        fnn.gradcheck(_Doubler(), rng.standard_normal((3, 2)))


def test_gradcheck_catches_nondeterminism(rng):
    def f(x):
        return float(np.sum(x * x)), (2 * x + rng.standard_normal(x.shape) * 1e-9,)
    with pytest.raises(fnn.GradcheckError, match="not deterministic"):
        fnn.gradcheck(f, rng.standard_normal((3, 2)))


def test_gradcheck_multiply_gate():
    # the lecture's f = (x + y) * z at x=-2, y=5, z=-4
    def f(x, y, z):
        q = x + y
        return float(np.sum(q * z)), (z, z, q)
    x, y, z = np.array([-2.0]), np.array([5.0]), np.array([-4.0])
    assert f(x, y, z)[1] == (-4.0, -4.0, 3.0)
    fnn.gradcheck(f, x, y, z)


def test_gradcheck_requires_float64(rng):
    with pytest.raises(TypeError, match="float64"):
        fnn.gradcheck(fnn.Linear(3, 2), rng.standard_normal((2, 3)).astype(np.float32))
    with pytest.raises(TypeError, match="float64"):
        fnn.gradcheck(fnn.Linear(3, 2), rng.standard_normal((2, 3)))


def test_numerical_gradient_restores_x(rng):
    x = rng.standard_normal((4, 3))
    x0 = x.copy()
    g = fnn.numerical_gradient(lambda v: np.sum(v ** 3), x)
    np.testing.assert_allclose(g, 3 * x0 ** 2, rtol=1e-7)
    np.testing.assert_array_equal(x, x0)


# ---------------------------------------------------------------------------- errors
def test_errors_name_module_and_shapes():
    model = fnn.Sequential(fnn.Linear(4, 3), fnn.ReLU(), fnn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"Sequential\[0\].*Linear\(in_features=4.*5 "
                                         r"features, expected 4"):
        model(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"2-D"):
        model(np.zeros(4, np.float32))
    with pytest.raises(TypeError, match=r"float64.*float32"):
        model(np.zeros((2, 4)))
    for bad in (np.int64, np.float16, np.complex64):
        with pytest.raises(TypeError, match=np.dtype(bad).name):
            model(np.zeros((2, 4), bad))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        model([[0.0] * 4])
    model(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        model.backward(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="float64"):
        model.backward(np.zeros((2, 2)))


# The loss kernels skip the gradient when handed an empty one (evaluation): same value.
@pytest.mark.parametrize("kind", ["mse", "xent", "svm"])
def test_loss_kernels_value_without_gradient(kind, dtype, threads, rng):
    from fastnn._kernels import losses as kl
    # (700, 3): two blocks of rows in the cross-entropy kernel; (5, 3000): one row a block
    for n_threads, shape in ((1, (7, 5)), (2, (600, 300)), (1, (32, 3)), (2, (700, 3)),
                             (2, (5, 3000))):
        fnn.set_num_threads(n_threads)
        s = rng.standard_normal(shape).astype(dtype)
        rows = np.empty(shape[0])
        g = np.empty(shape, dtype)
        none = np.empty((0, 0), dtype)
        if kind == "mse":
            t = rng.standard_normal(shape).astype(dtype)
            a = kl._mse(s, t, g, rows, 0.5)
            b = kl._mse(s, t, none, rows, 0.5)
            expect = ref.mse_loss(s, t, "sum")[0] * 0.5
        else:
            y = rng.integers(0, shape[1], shape[0])
            if kind == "xent":
                a = kl._xent(s, y, g, rows, 1.0)
                b = kl._xent(s, y, none, rows, 1.0)
                expect = ref.cross_entropy_loss(s, y, "sum")[0]
            else:
                a = kl._svm(s, y, g, rows, 1.0, 1.0)
                b = kl._svm(s, y, none, rows, 1.0, 1.0)
                expect = ref.svm_loss(s, y, 1.0, "sum")[0]
        assert a == b
        np.testing.assert_allclose(a, expect, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_parameter_array_protocol():
    p = fnn.Parameter(np.arange(3, dtype=np.float32))
    assert np.asarray(p) is p.data
    assert np.array(p) is not p.data
    assert np.asarray(p, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="copy"):
        np.asarray(p, dtype=np.float64, copy=False)


def test_sequential_mixing_dtypes_names_the_layer():
    """A Linear's own output is trusted by the next layer except for its dtype: a model
    mixing float32 and float64 layers gets the usual dtype error, not a buffer error."""
    m = fnn.Sequential(fnn.Linear(3, 4), fnn.ReLU(), fnn.Linear(4, 2, dtype=np.float64))
    with pytest.raises(TypeError, match=r"Sequential\[2\]: Linear\(in_features=4, "
                                        r"out_features=2\): input has dtype float32 but the "
                                        r"module computes in float64"):
        m(np.zeros((2, 3), np.float32))
