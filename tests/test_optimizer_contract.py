"""The optimizer contract (fastnn.optim.Optimizer): an optimizer written against it runs in
step(), compile_step and the Trainer without the compiled step knowing which it is."""
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn.optim import Optimizer
from fastnn._kernels._core import OptKind
from _util import assert_bitwise_equal


class PlainSGD(Optimizer):
    """p -= lr * g, through the SGD kernel with no state (the contract at its smallest)."""
    _kind = OptKind.SGD

    def __init__(self, params, lr):
        super().__init__(params)
        self._hyper = (float(lr), 0.0, 0.0, 0.0, 0.0, 0.0)

    def _state_for(self, i):
        return (None,), False


class HeavyBall(Optimizer):
    """SGD with momentum 0.5 and weight decay 0.01, keeping its own buffers through the
    base class's _new_state / _fits (the same arithmetic as fnn.SGD with those options)."""
    _kind = OptKind.SGD

    def __init__(self, params, lr):
        super().__init__(params)
        self._hyper = (float(lr), 0.5, 0.0, 0.01, 0.0, 0.0)

    def _state_for(self, i):
        if self._fits(i):
            return self._state[i], False
        return self._new_state(i, 1), True


def _model(dtype, seed=0):
    return fnn.Sequential(fnn.Linear(5, 16, dtype=dtype, rng=seed), fnn.Tanh(),
                          fnn.Linear(16, 16, dtype=dtype, rng=seed + 1), fnn.ReLU(),
                          fnn.Linear(16, 3, dtype=dtype, rng=seed + 2))


def _data(rng, dtype, n=6, m=13):
    return [(rng.standard_normal((m, 5)).astype(dtype), rng.integers(0, 3, m))
            for _ in range(n)]


def _module_step(model, lf, opt, x, y):
    model.zero_grad()
    opt.zero_grad()
    loss = lf(model(x), y)
    model.backward(lf.backward(), input_grad=False)
    opt.step()
    return loss


@pytest.mark.parametrize("custom, ref_kw", [(PlainSGD, dict()),
                                            (HeavyBall, dict(momentum=0.5, weight_decay=0.01))])
@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("n_threads", [1, 2])
def test_custom_optimizer_compiles_and_equals_sgd(custom, ref_kw, n_threads, dtype, rng):
    fnn.set_num_threads(n_threads)
    m1, m2, m3 = _model(dtype), _model(dtype), _model(dtype)
    o1, o2 = custom(m1.parameters(), lr=0.1), custom(m2.parameters(), lr=0.1)
    o3 = fnn.SGD(m3.parameters(), lr=0.1, **ref_kw)
    lf1, lf2, lf3 = (fnn.CrossEntropyLoss() for _ in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = fnn.compile_step(m1, lf1, o1)
    assert step.compiled, step.reason
    for i, (x, y) in enumerate(_data(rng, dtype)):
        la = step(x, y)
        lb = _module_step(m2, lf2, o2, x, y)
        lc = _module_step(m3, lf3, o3, x, y)
        assert la == lb == lc, (i, la, lb, lc)
        for a, b, c in zip(m1.parameters(), m2.parameters(), m3.parameters()):
            assert_bitwise_equal(a.data, b.data, f"step {i}")
            assert_bitwise_equal(a.data, c.data, f"step {i} vs fnn.SGD")
    assert o1.steps == o2.steps == o3.steps == 6
    if custom is HeavyBall:
        for a, b in zip(o1._state, o3._state):
            assert_bitwise_equal(a[0], b[0])


def test_custom_optimizer_in_the_trainer(dtype, rng):
    X = rng.standard_normal((200, 5)).astype(dtype)
    y = rng.integers(0, 3, 200)
    hist = []
    for compiled in (True, False):
        m = _model(dtype)
        t = fnn.Trainer(m, fnn.CrossEntropyLoss(), HeavyBall(m.parameters(), lr=0.05),
                        batch_size=32, epochs=3, progress=False, compiled=compiled, seed=3)
        hist.append((t.fit(X, y).history["loss"],
                     [p.data.copy() for p in m.parameters()]))
    assert hist[0][0] == hist[1][0]
    for a, b in zip(hist[0][1], hist[1][1]):
        assert_bitwise_equal(a, b)


def test_an_optimizer_that_overrides_step_falls_back(dtype, rng):
    class Logged(PlainSGD):
        def step(self):
            super().step()

    m = _model(dtype)
    with pytest.warns(RuntimeWarning, match="overrides step"):
        step = fnn.compile_step(m, fnn.CrossEntropyLoss(), Logged(m.parameters(), lr=0.1))
    assert not step.compiled and "Logged overrides step()" in step.reason


def test_an_optimizer_without_a_kind_falls_back(dtype):
    class NoKind(Optimizer):
        def step(self):
            pass

    m = _model(dtype)
    with pytest.warns(RuntimeWarning, match="not one of fastnn's optimizers"):
        step = fnn.compile_step(m, fnn.CrossEntropyLoss(), NoKind(m.parameters()))
    assert not step.compiled


def test_base_class_validates_params_with_the_subclass_name():
    with pytest.raises(ValueError, match="PlainSGD: got an empty parameter list"):
        PlainSGD([], lr=0.1)
    with pytest.raises(TypeError, match="PlainSGD: pass model.parameters"):
        PlainSGD(_model(np.float32), lr=0.1)
    with pytest.raises(NotImplementedError):
        Optimizer(_model(np.float32).parameters())._state_for(0)


def test_sgd_state_version_tracks_the_momentum_buffer_in_use():
    m = _model(np.float64)
    o = fnn.SGD(m.parameters(), lr=0.1)
    v0 = o._state_version
    assert o._prepare_state() == ([(None,)] * 6, [False] * 6)
    o.momentum = 0.9                       # starts using a buffer: pointers must be asked for
    assert o._state_version != v0
    state, first = o._prepare_state()
    assert all(len(s) == 1 and s[0] is not None for s in state) and all(first)
    v1 = o._state_version
    o.momentum = 0.5                       # still uses it: nothing to re-point
    assert o._state_version == v1
    o.momentum = 0.0
    assert o._state_version != v1
