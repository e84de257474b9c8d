"""fastnn.init: torch's formulas (fans, gains, bounds, standard deviations), in-place fills
of Parameters and arrays, reproducibility from rng=, Linear(init=...), and the errors."""
import functools
import math

import numpy as np
import pytest

import fastnn as fnn
from fastnn import init

try:
    import torch
except ImportError:          # parity tests skip without torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

SHAPES = [(300, 200), (64, 1000), (1000, 64), (50, 20, 3, 3)]


def _fans(shape):
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


# ------------------------------------------------------------------------ gains
GAINS = [("linear", None, 1.0), ("conv2d", None, 1.0), ("sigmoid", None, 1.0),
         ("tanh", None, 5.0 / 3), ("relu", None, math.sqrt(2.0)),
         ("leaky_relu", None, math.sqrt(2.0 / (1 + 0.01 ** 2))),
         ("leaky_relu", 0.2, math.sqrt(2.0 / 1.04)), ("leaky_relu", 3, math.sqrt(0.2)),
         ("selu", None, 0.75)]


@pytest.mark.parametrize("nl,param,expected", GAINS)
def test_calculate_gain(nl, param, expected):
    assert init.calculate_gain(nl, param) == pytest.approx(expected, rel=1e-15)


@needs_torch
@pytest.mark.parametrize("nl,param,expected", GAINS)
def test_calculate_gain_equals_torch(nl, param, expected):
    assert init.calculate_gain(nl, param) == torch.nn.init.calculate_gain(nl, param)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="unsupported nonlinearity 'gelu'"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "x")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", True)


# ------------------------------------------------------------------------ fans
@needs_torch
@pytest.mark.parametrize("shape", SHAPES + [(7, 3), (1, 1), (3, 1, 5)])
def test_fans_equal_torch(shape):
    t = torch.empty(shape)
    assert init._fans("t", np.empty(shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(t)


# ------------------------------------------------------------------------ distributions
def _bound_std(name, shape, **kw):
    fan_in, fan_out = _fans(shape)
    if name.startswith("xavier"):
        std = kw.get("gain", 1.0) * math.sqrt(2.0 / (fan_in + fan_out))
    else:
        fan = fan_in if kw.get("mode", "fan_in") == "fan_in" else fan_out
        std = init.calculate_gain(kw.get("nonlinearity", "leaky_relu"), kw.get("a", 0)) \
            / math.sqrt(fan)
    return math.sqrt(3.0) * std, std


CASES = [("xavier_uniform_", {}), ("xavier_uniform_", {"gain": 2.0}),
         ("xavier_normal_", {}), ("xavier_normal_", {"gain": 5.0 / 3}),
         ("kaiming_uniform_", {}), ("kaiming_uniform_", {"a": math.sqrt(5)}),
         ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
         ("kaiming_normal_", {}), ("kaiming_normal_", {"mode": "fan_out"}),
         ("kaiming_normal_", {"nonlinearity": "tanh"})]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}{sorted(k.items())}" for n, k in CASES])
def test_statistics_match_torch_formulas(name, kw, shape, dtype):
    w = fnn.Parameter(np.zeros(shape, dtype))
    out = getattr(init, name)(w, rng=0, **kw)
    assert out is w
    a = w.data.astype(np.float64)
    n = a.size
    bound, std = _bound_std(name, shape, **kw)
    if name.endswith("uniform_"):
        assert np.all(np.abs(a) <= bound * (1 + 1e-6))
        assert a.max() > 0.99 * bound and a.min() < -0.99 * bound
    # mean 0 within 5 standard errors, std within 5 % (n >= 60000)
    assert abs(a.mean()) < 5 * std / math.sqrt(n)
    assert a.std() == pytest.approx(std, rel=0.05)


@needs_torch
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}{sorted(k.items())}" for n, k in CASES])
def test_statistics_agree_with_torch_init(name, kw):
    """Same distribution as torch's own function (std within 3 %, bounds equal)."""
    shape = (400, 300)
    torch.manual_seed(0)
    t = torch.empty(shape, dtype=torch.float64)
    getattr(torch.nn.init, name)(t, **kw)
    t = t.numpy()
    a = getattr(init, name)(np.empty(shape), rng=1, **kw)
    assert a.std() == pytest.approx(t.std(), rel=0.03)
    if name.endswith("uniform_"):
        assert np.abs(a).max() == pytest.approx(np.abs(t).max(), rel=1e-2)


def test_uniform_normal_constant(dtype):
    a = init.uniform_(np.empty((200, 300), dtype), -2.0, 3.0, rng=0)
    assert a.dtype == dtype and a.min() >= -2.0 and a.max() <= 3.0
    assert a.mean() == pytest.approx(0.5, abs=0.02)
    b = init.normal_(np.empty((200, 300), dtype), mean=1.5, std=0.5, rng=0)
    assert b.mean() == pytest.approx(1.5, abs=0.01)
    assert b.std() == pytest.approx(0.5, rel=0.02)
    p = fnn.Parameter(np.ones((3, 4), dtype))
    assert init.zeros_(p) is p and not p.data.any()
    assert init.ones_(p) is p and np.all(p.data == 1)
    assert init.constant_(p, 0.25) is p and np.all(p.data == 0.25)
    assert p.data.dtype == dtype


def test_in_place_keeps_the_array():
    p = fnn.Parameter(np.zeros((5, 4)))
    data = p.data
    init.xavier_uniform_(p, rng=0)
    assert p.data is data and data.any()
    a = np.zeros((6, 2), np.float32)[::2]          # a strided view is filled in place
    init.kaiming_normal_(a, rng=0)
    assert a.any()


def test_rng_reproducible():
    a = init.kaiming_uniform_(np.empty((20, 10)), rng=42)
    b = init.kaiming_uniform_(np.empty((20, 10)), rng=np.random.default_rng(42))
    c = init.kaiming_uniform_(np.empty((20, 10)), rng=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # float32 is the float64 draw rounded
    d = init.kaiming_uniform_(np.empty((20, 10), np.float32), rng=42)
    np.testing.assert_array_equal(d, a.astype(np.float32))


def test_kaiming_uniform_sqrt5_is_the_linear_default_bound():
    a = init.kaiming_uniform_(np.empty((64, 100)), a=math.sqrt(5), rng=0)
    assert np.abs(a).max() <= 0.1 and np.abs(a).max() > 0.099


def test_empty_array_left_alone():
    a = np.empty((0, 3))
    assert init.kaiming_uniform_(a) is a
    assert init.kaiming_normal_(a) is a


# ------------------------------------------------------------------------ Linear(init=)
def test_linear_default_unchanged():
    """No init: exactly the draws Linear always made (weight, then bias)."""
    lin = fnn.Linear(7, 5, rng=3)
    rng = np.random.default_rng(3)
    bound = 1.0 / np.sqrt(7)
    w = rng.uniform(-bound, bound, (5, 7)).astype(np.float32)
    b = rng.uniform(-bound, bound, 5).astype(np.float32)
    np.testing.assert_array_equal(lin.weight.data, w)
    np.testing.assert_array_equal(lin.bias.data, b)


@pytest.mark.parametrize("name", list(init.INITIALIZERS))
def test_linear_init_by_name(name, dtype):
    lin = fnn.Linear(30, 20, dtype=dtype, rng=0, init=name)
    expected = init.INITIALIZERS[name](np.zeros((20, 30), dtype), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(lin.weight.data, expected)
    assert lin.weight.data.dtype == dtype
    # with a trailing underscore too
    lin2 = fnn.Linear(30, 20, dtype=dtype, rng=0, init=name + "_")
    np.testing.assert_array_equal(lin2.weight.data, expected)


def test_linear_init_callable_and_bias_init():
    f = functools.partial(init.kaiming_normal_, nonlinearity="relu")
    lin = fnn.Linear(50, 40, rng=1, init=f, bias_init="zeros", dtype=np.float64)
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(lin.weight.data,
                                  init.kaiming_normal_(np.zeros((40, 50)), nonlinearity="relu",
                                                       rng=rng))
    assert not lin.bias.data.any()
    lin = fnn.Linear(5, 4, init=lambda w, rng: init.constant_(w, 0.5),
                     bias_init=lambda b, rng: init.constant_(b, -1.0))
    assert np.all(lin.weight.data == 0.5) and np.all(lin.bias.data == -1.0)
    lin = fnn.Linear(5, 4, bias=False, init="xavier_uniform")
    assert lin.bias is None


def test_linear_init_errors():
    with pytest.raises(ValueError, match="Linear: unknown init 'glorot'"):
        fnn.Linear(3, 2, init="glorot")
    with pytest.raises(TypeError, match="Linear: bias_init must be a name"):
        fnn.Linear(3, 2, bias_init=1.0)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        fnn.Linear(3, 2, bias_init="xavier_uniform")


# ------------------------------------------------------------------------ errors
def test_errors():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(np.empty(5))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_normal_(np.empty(5))
    with pytest.raises(ValueError, match="mode 'fan_avg' not supported"):
        init.kaiming_uniform_(np.empty((3, 3)), mode="fan_avg")
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.kaiming_uniform_(np.empty((3, 3)), nonlinearity="swish")
    with pytest.raises(TypeError, match="Parameter or a numpy.ndarray, got list"):
        init.zeros_([1.0, 2.0])
    with pytest.raises(TypeError, match="floating-point dtype, got int64"):
        init.uniform_(np.zeros((2, 2), np.int64))
    ro = np.zeros((2, 2))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        init.normal_(ro)
    with pytest.raises(ValueError, match="a must be <= b"):
        init.uniform_(np.empty(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="std must be >= 0"):
        init.normal_(np.empty(3), std=-1.0)
    with pytest.raises(ValueError, match="gain must be a finite real number"):
        init.xavier_normal_(np.empty((2, 2)), gain=float("nan"))
    with pytest.raises(ValueError, match="val must be a real number"):
        init.constant_(np.empty(3), "1")
