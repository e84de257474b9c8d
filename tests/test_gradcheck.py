"""fastnn.gradcheck and fastnn.numerical_gradient: every module passes, wrong or
non-deterministic gradients are caught, float64 is required, and the checked module and
inputs are left as they were."""
import numpy as np
import pytest

import fastnn as fnn

ACTS = [fnn.Sigmoid, fnn.ReLU, fnn.Tanh, lambda: fnn.LeakyReLU(0.01),
        lambda: fnn.LeakyReLU(0.2), lambda: fnn.LeakyReLU(-0.3), fnn.Identity]
ACT_IDS = ["sigmoid", "relu", "tanh", "leaky0.01", "leaky0.2", "leaky-0.3", "identity"]


def _away_from_kink(x):
    """Move every element at least 0.1 away from 0 (the kink of ReLU / LeakyReLU)."""
    return x + np.sign(x) * 0.1


def _mlp(act, bias=True, sizes=(5, 6, 4, 3), seed=0):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(fnn.Linear(sizes[i], sizes[i + 1], bias=bias, dtype=np.float64,
                                 rng=seed + i))
        if i < len(sizes) - 2:
            layers.append(act())
    return fnn.Sequential(*layers)


def _names(report):
    return [e["name"] for e in report.entries]


# ================================================================= passing modules
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear(bias, rng):
    lin = fnn.Linear(5, 4, bias=bias, dtype=np.float64, rng=rng)
    report = fnn.gradcheck(lin, rng.standard_normal((3, 5)))
    assert isinstance(report, fnn.GradcheckReport)
    assert report and report.passed
    assert _names(report) == ["input 0", "weight"] + (["bias"] if bias else [])
    for e in report.entries:
        assert e["max_abs_err"] < 1e-6, e
    assert report["weight"]["shape"] == (4, 5)
    assert "weight" in str(report) and "input 0" in str(report)
    with pytest.raises(KeyError):
        report["nope"]


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(4, 5), (7,), (2, 3, 4)], ids=["2d", "1d", "3d"])
def test_activation(act, shape, rng):
    x = _away_from_kink(rng.standard_normal(shape))
    report = fnn.gradcheck(act(), x)
    assert report
    assert _names(report) == ["input 0"]


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_sequential_mlp(act, bias, rng):
    model = _mlp(act, bias)
    x = rng.standard_normal((7, 5))
    report = fnn.gradcheck(model, x)
    assert report
    names = _names(report)
    params = [n for n, _ in model.named_parameters()]
    assert names == ["input 0"] + params
    assert set(params) == ({"0.weight", "2.weight", "4.weight"} |
                           ({"0.bias", "2.bias", "4.bias"} if bias else set()))


def test_sequential_with_leading_activation_and_shared_linear(rng):
    lin = fnn.Linear(4, 4, dtype=np.float64, rng=7)
    model = fnn.Sequential(fnn.Tanh(), lin, fnn.Sigmoid(), lin, fnn.LeakyReLU(-0.3),
                           fnn.Linear(4, 2, dtype=np.float64, rng=8))
    report = fnn.gradcheck(model, rng.standard_normal((3, 4)))
    assert _names(report) == ["input 0", "1.weight", "1.bias", "5.weight", "5.bias"]


# ========================================================== wrong gradients caught
class _Square(fnn.Module):
    """y = x**2 with a configurable (possibly wrong) backward."""

    def __init__(self, factor=1.0, noise=False):
        super().__init__()
        self.factor = factor
        self.noise = np.random.default_rng() if noise else None
        self.x = None

    def forward(self, x):
        if self.training:
            self.x = x.copy()
        return x * x

    def backward(self, grad_out, input_grad=True):
        g = self.factor * 2.0 * self.x * grad_out
        if self.noise is not None:
            g = g + self.noise.standard_normal(g.shape) * 1e-3
        return g if input_grad else None


class _Scale(fnn.Module):
    """y = x * w (w a Parameter broadcast over rows), with an optionally wrong dL/dw."""

    def __init__(self, n, wrong_param=False):
        super().__init__()
        self.w = fnn.Parameter(np.linspace(0.5, 1.5, n))
        self.wrong_param = wrong_param
        self.x = None

    def forward(self, x):
        if self.training:
            self.x = x.copy()
        return x * self.w.data

    def backward(self, grad_out, input_grad=True):
        gw = (grad_out * self.x).sum(axis=0)
        self.w.grad = self.w.grad + (3.0 * gw if self.wrong_param else gw)
        return grad_out * self.w.data if input_grad else None


def test_correct_custom_modules_pass(rng):
    assert fnn.gradcheck(_Square(), rng.standard_normal((3, 4)))
    report = fnn.gradcheck(_Scale(4), rng.standard_normal((3, 4)))
    assert _names(report) == ["input 0", "w"]


def test_wrong_input_gradient_caught(rng):
    with pytest.raises(fnn.GradcheckError, match=r"input 0.*index \(") as info:
        fnn.gradcheck(_Square(factor=2.0), rng.standard_normal((3, 4)))
    assert isinstance(info.value, AssertionError)
    assert "analytic" in str(info.value) and "numerical" in str(info.value)


def test_wrong_parameter_gradient_caught(rng):
    with pytest.raises(fnn.GradcheckError, match=r"gradient of w is wrong at index \("):
        fnn.gradcheck(_Scale(4, wrong_param=True), rng.standard_normal((3, 4)))


def test_wrong_gradient_in_sequential_caught(rng):
    model = fnn.Sequential(fnn.Linear(4, 3, dtype=np.float64, rng=0), _Square(factor=0.5),
                           fnn.Linear(3, 2, dtype=np.float64, rng=1))
    with pytest.raises(fnn.GradcheckError, match=r"input 0.*index"):
        fnn.gradcheck(model, rng.standard_normal((3, 4)))


def test_wrong_gradient_callable_caught(rng):
    def f(x):
        return float(np.sum(x ** 2)), 3.0 * x          # true gradient: 2x
    with pytest.raises(fnn.GradcheckError, match=r"input 0.*index"):
        fnn.gradcheck(f, rng.standard_normal((3, 2)))


def test_wrong_gradient_shape_caught(rng):
    def f(x):
        return float(np.sum(x ** 2)), (2.0 * x).ravel()
    with pytest.raises(fnn.GradcheckError, match="shape"):
        fnn.gradcheck(f, rng.standard_normal((3, 2)))


def test_nondeterministic_module_caught(rng):
    with pytest.raises(fnn.GradcheckError, match="not deterministic"):
        fnn.gradcheck(_Square(noise=True), rng.standard_normal((3, 4)))


def test_nondeterministic_callable_caught(rng):
    noise = np.random.default_rng(1)

    def f(x):
        return float(np.sum(x * x)), 2 * x + noise.standard_normal(x.shape) * 1e-9
    with pytest.raises(fnn.GradcheckError, match="not deterministic"):
        fnn.gradcheck(f, rng.standard_normal((3, 2)))


# ======================================================================== float64
def test_float32_model_rejected(rng):
    with pytest.raises(TypeError, match="float64"):
        fnn.gradcheck(fnn.Linear(3, 2), rng.standard_normal((2, 3)))
    model = fnn.Sequential(fnn.Linear(3, 2, dtype=np.float64), fnn.ReLU(), fnn.Linear(2, 2))
    with pytest.raises(TypeError, match="float64"):
        fnn.gradcheck(model, rng.standard_normal((2, 3)))


def test_float32_input_rejected(rng):
    x32 = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="float64"):
        fnn.gradcheck(fnn.Linear(3, 2, dtype=np.float64), x32)
    with pytest.raises(TypeError, match="float64"):
        fnn.gradcheck(fnn.ReLU(), x32)
    with pytest.raises(TypeError, match="float64"):
        fnn.gradcheck(lambda x: (float(x.sum()), np.ones_like(x)), x32)


def test_bad_target_and_inputs(rng):
    with pytest.raises(TypeError):
        fnn.gradcheck(42, rng.standard_normal(3))
    with pytest.raises(TypeError):
        fnn.gradcheck(fnn.ReLU(), [1.0, 2.0])
    with pytest.raises(ValueError):
        fnn.gradcheck(fnn.ReLU(), rng.standard_normal(3), eps=0)


# ===================================================================== callables
def test_callable_two_inputs(rng):
    def f(x, y):
        return float(np.sum(x * y)), (y.copy(), x.copy())
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    report = fnn.gradcheck(f, x, y)
    assert report
    assert _names(report) == ["input 0", "input 1"]


def test_callable_none_gradient_is_skipped(rng):
    def f(x, y):
        return float(np.sum(x * y)), (y.copy(), None)
    report = fnn.gradcheck(f, rng.standard_normal(3), rng.standard_normal(3))
    assert _names(report) == ["input 0"]


class MultiplyGate:
    """CS231n's multiply gate: forward(x, y) = x * y; backward(dz) = [y * dz, x * dz]."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dz):
        return [self.y * dz, self.x * dz]


class AddGate:
    def forward(self, x, y):
        return x + y

    def backward(self, dz):
        return [dz, dz]


def test_cs231n_multiply_gate():
    """f(x, y, z) = (x + y) * z at x = -2, y = 5, z = -4: f = -12, df/dx = df/dy = -4,
    df/dz = 3 (the lecture's worked example)."""
    add, mul = AddGate(), MultiplyGate()

    def f(x, y, z):
        q = add.forward(x, y)
        out = mul.forward(q, z)
        dq, dz = mul.backward(np.ones_like(out))
        dx, dy = add.backward(dq)
        return float(np.sum(out)), (dx, dy, dz)

    x, y, z = np.array([-2.0]), np.array([5.0]), np.array([-4.0])
    value, (dx, dy, dz) = f(x, y, z)
    assert value == -12.0
    assert dx.tolist() == [-4.0] and dy.tolist() == [-4.0] and dz.tolist() == [3.0]
    report = fnn.gradcheck(f, x, y, z)
    assert _names(report) == ["input 0", "input 1", "input 2"]
    for e in report.entries:
        assert e["max_abs_err"] < 1e-8

    # the gate alone, on arrays
    rng = np.random.default_rng(0)

    def g(a, b):
        out = mul.forward(a, b)
        return float(np.sum(out)), tuple(mul.backward(np.ones_like(out)))
    assert fnn.gradcheck(g, rng.standard_normal((2, 3)), rng.standard_normal((2, 3)))


def test_callable_integer_input_passed_through(rng):
    labels = np.array([0, 2, 1])

    def f(x, lab):
        rows = np.arange(len(lab))
        g = np.zeros_like(x)
        g[rows, lab] = 1.0
        return float(x[rows, lab].sum()), (g, None)
    report = fnn.gradcheck(f, rng.standard_normal((3, 3)), labels)
    assert _names(report) == ["input 0"]


# ============================================================ numerical_gradient
def test_numerical_gradient_cubic(rng):
    x = rng.uniform(-1.5, 1.5, (4, 5))
    x0 = x.copy()
    calls = []

    def f(v):
        calls.append(v)
        return np.sum(v ** 3)

    num = fnn.numerical_gradient(f, x, h=1e-5)
    assert num.shape == x.shape and num.dtype == np.float64
    np.testing.assert_allclose(num, 3 * x0 ** 2, rtol=0, atol=1e-8)
    assert x.tobytes() == x0.tobytes()          # restored bitwise
    assert len(calls) == 2 * x.size
    assert all(c is x for c in calls)


def test_numerical_gradient_noncontiguous_and_0d(rng):
    base = rng.standard_normal((6, 6))
    x = base[::2, ::-3]
    before = base.copy()
    num = fnn.numerical_gradient(lambda v: np.sum(np.sin(v)), x)
    np.testing.assert_allclose(num, np.cos(x), rtol=0, atol=1e-8)
    assert base.tobytes() == before.tobytes()
    s = np.array(0.7)
    np.testing.assert_allclose(fnn.numerical_gradient(lambda v: float(v) ** 2, s), 1.4,
                               atol=1e-8)
    assert s == 0.7


def test_numerical_gradient_restores_x_when_f_raises():
    x = np.array([1.0, 2.0, 3.0])
    state = {"n": 0}

    def f(v):
        state["n"] += 1
        if state["n"] == 3:
            raise RuntimeError("boom")
        return v.sum()
    with pytest.raises(RuntimeError, match="boom"):
        fnn.numerical_gradient(f, x)
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("bad", [np.arange(4), np.arange(4).astype(np.int32),
                                 np.zeros(3, np.complex128), [1.0, 2.0]],
                         ids=["int64", "int32", "complex", "list"])
def test_numerical_gradient_rejects_non_float(bad):
    with pytest.raises(TypeError):
        fnn.numerical_gradient(lambda v: 0.0, bad)


def test_numerical_gradient_rejects_readonly_x():
    x = np.ones(3)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        fnn.numerical_gradient(lambda v: float(v.sum()), x)


@pytest.mark.parametrize("h", [0, 0.0, -1e-5, float("nan")])
def test_numerical_gradient_rejects_bad_h(h):
    with pytest.raises(ValueError):
        fnn.numerical_gradient(lambda v: float(v.sum()), np.ones(3), h=h)


# ===================================================== state left as it was
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_module_state_restored(training, rng):
    model = _mlp(fnn.Tanh)
    x = rng.standard_normal((7, 5))
    # make some gradients nonzero first
    model(x)
    model.backward(np.ones((7, 3)))
    assert any(np.any(p.grad) for p in model.parameters())
    model.train(training)
    params = {n: p.data.copy() for n, p in model.named_parameters()}
    x_before = x.copy()
    assert fnn.gradcheck(model, x)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    for n, p in model.named_parameters():
        assert not np.any(p.grad), n
        assert p.data.tobytes() == params[n].tobytes(), n       # parameters restored
    assert x.tobytes() == x_before.tobytes()


def test_state_restored_after_failure(rng):
    model = fnn.Sequential(fnn.Linear(4, 3, dtype=np.float64, rng=0), _Square(factor=0.5))
    model.eval()
    x = rng.standard_normal((3, 4))
    x_before = x.copy()
    with pytest.raises(fnn.GradcheckError):
        fnn.gradcheck(model, x)
    assert not model.training
    assert not any(m.training for m in model.modules())
    assert not np.any(model[0].weight.grad)
    assert x.tobytes() == x_before.tobytes()


def test_training_flag_restored_when_forward_raises(rng):
    model = fnn.Sequential(fnn.Linear(4, 3, dtype=np.float64, rng=0), fnn.ReLU()).eval()
    with pytest.raises(ValueError, match="features"):
        fnn.gradcheck(model, rng.standard_normal((2, 5)))     # wrong feature count
    assert not model.training
    assert not any(m.training for m in model.modules())


def test_callable_inputs_not_modified(rng):
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x0, y0 = x.copy(), y.copy()
    seen = []

    def f(a, b):
        seen.append((a, b))
        return float(np.sum(a * b)), (b.copy(), a.copy())
    fnn.gradcheck(f, x, y)
    assert x.tobytes() == x0.tobytes() and y.tobytes() == y0.tobytes()
    assert all(a is not x and b is not y for a, b in seen)     # works on copies


def test_module_usable_after_gradcheck(rng):
    model = _mlp(fnn.ReLU)
    x = rng.standard_normal((7, 5))
    out_before = model(x).copy()
    fnn.gradcheck(model, x)
    np.testing.assert_array_equal(model(x), out_before)
    gx = model.backward(np.ones((7, 3)))
    assert gx.shape == x.shape
