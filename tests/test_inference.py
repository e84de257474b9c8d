"""compile_inference / Module.predict: bitwise equal to model.eval()(x) for chains and graphs
of every layer and gate, both dtypes, batch 1 to large, 1 and 2 threads; buffers grown for
larger batches; re-planned when the model changes; the module path for other models; the
errors for bad input."""
import copy

import numpy as np
import pytest

import fastnn as fnn
from _util import assert_bitwise_equal

DTYPES = [np.float32, np.float64]
DT_IDS = ["float32", "float64"]
BATCHES = (1, 2, 7, 300, 1030)


def _chain(dt, seed=0):
    return fnn.Sequential(
        fnn.Linear(5, 16, dtype=dt, rng=seed), fnn.ReLU(),
        fnn.Linear(16, 16, dtype=dt, rng=seed + 1), fnn.Sigmoid(),
        fnn.Sequential(fnn.Linear(16, 8, bias=False, dtype=dt, rng=seed + 2), fnn.Tanh()),
        fnn.LeakyReLU(-0.3), fnn.Identity(), fnn.Linear(8, 8, dtype=dt, rng=seed + 3),
        fnn.LeakyReLU(0.2), fnn.Linear(8, 3, dtype=dt, rng=seed + 4))


def _graph(dt, seed=0):
    g = fnn.Graph()
    x = g.input("x", 5)
    shared = fnn.Linear(5, 6, dtype=dt, rng=seed)
    a = g.add(fnn.ReLU(), g.add(shared, x))
    b = g.add(fnn.Tanh(), g.add(fnn.Linear(5, 6, dtype=dt, rng=seed + 1), x))
    c = g.add(shared, x)
    s = g.add(fnn.Maximum(), g.add(fnn.Add(), a, b), g.add(fnn.Multiply(), b, c))
    p, q = g.add(fnn.Split([2, 10]), g.add(fnn.Concat(), s, c))
    h = g.add(fnn.Linear(10, 4, dtype=dt, rng=seed + 2), q)
    g.output(g.add(fnn.Concat(), g.add(fnn.Sigmoid(), h), p))
    return g


MODELS = {"chain": _chain, "graph": _graph}


def _x(batch, dt, seed=0):
    return np.random.default_rng(seed + batch).standard_normal((batch, 5)).astype(dt)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_bitwise_equal_to_eval_forward(kind, dtype, threads):
    model = MODELS[kind](dtype)
    f = fnn.compile_inference(model)
    assert f.compiled, f.reason
    old = fnn.get_num_threads()
    fnn.set_num_threads(threads)
    try:
        for batch in BATCHES + (3, 1):         # grows, then smaller batches again
            x = _x(batch, dtype)
            want = model.eval()(x).copy()
            model.train()
            y = f(x)
            assert y.shape == want.shape and y.dtype == want.dtype
            assert_bitwise_equal(y, want, f"{kind} batch {batch}")
            assert_bitwise_equal(model.predict(x), want, f"predict batch {batch}")
            assert model.training              # predict leaves the mode alone
    finally:
        fnn.set_num_threads(old)
    assert f.capacity >= max(BATCHES)


def test_output_buffer_is_reused_and_predict_copies():
    model = _chain(np.float32)
    f = fnn.compile_inference(model, batch_size=8)
    y1 = f(_x(4, np.float32))
    keep = y1.copy()
    y2 = f(_x(4, np.float32, seed=1))
    assert np.shares_memory(y1, y2)            # the same preallocated buffer
    assert not np.array_equal(keep, y2)
    p1 = model.predict(_x(4, np.float32))
    p2 = model.predict(_x(4, np.float32, seed=1))
    assert not np.shares_memory(p1, p2)
    assert_bitwise_equal(p1, keep)


def test_strided_and_fortran_inputs():
    model = _chain(np.float64)
    f = fnn.compile_inference(model)
    big = np.random.default_rng(0).standard_normal((20, 10))
    for x in (big[::2, :5], np.asfortranarray(big[:, 3:8]), big[:, :5]):
        assert_bitwise_equal(f(x).copy(), model.eval()(np.ascontiguousarray(x)))


def test_replanned_when_the_model_changes():
    model = _chain(np.float32)
    f = fnn.compile_inference(model)
    x = _x(3, np.float32)
    f(x)
    # parameters updated in place (training): seen without re-planning
    model[0].weight.data[...] *= 0.5
    assert_bitwise_equal(f(x).copy(), model.eval()(x))
    # a layer replaced
    model.append(fnn.Linear(3, 2, rng=9))
    assert_bitwise_equal(f(x).copy(), model.eval()(x))
    assert f.out_features == 2
    # dtype converted
    model.to(np.float64)
    x64 = x.astype(np.float64)
    assert_bitwise_equal(f(x64).copy(), model.eval()(x64))
    # predict follows too
    assert_bitwise_equal(model.predict(x64), model.eval()(x64))
    # a graph edited
    g = _graph(np.float32)
    fg = fnn.compile_inference(g)
    fg(x)
    g.output(g.add(fnn.Linear(5, 2, rng=1), g.input("unused", 5)))
    assert not fg.compiled and "2 inputs" in fg.reason
    outs = fg(x, x)
    want = g.eval()(x, x)
    for a, b in zip(outs, want):
        assert_bitwise_equal(a, b)


def test_module_path_for_other_models():
    class Twice(fnn.Module):
        def forward(self, x):
            return 2 * x

    model = fnn.Sequential(fnn.Linear(5, 3, rng=0), Twice())
    f = fnn.compile_inference(model)
    assert not f.compiled and "Twice" in f.reason
    x = _x(4, np.float32)
    model.train()
    assert_bitwise_equal(f(x), model.eval()(x))
    model.train()
    assert_bitwise_equal(model.predict(x), model.eval()(x))
    # a chain that starts with an activation: its width is not known up front
    act_first = fnn.Sequential(fnn.ReLU(), fnn.Linear(5, 2, rng=0))
    assert_bitwise_equal(fnn.compile_inference(act_first)(x), act_first.eval()(x))
    # two-input graph by name
    g = fnn.Graph()
    a, b = g.input("a", 5), g.input("b", 5)
    g.output(g.add(fnn.Add(), a, g.add(fnn.Linear(5, 5, rng=0), b)))
    assert_bitwise_equal(g.predict(a=x, b=x), g.eval()(a=x, b=x))
    assert repr(fnn.compile_inference(g)).startswith("InferenceFunction(module path")


def test_errors_name_the_model_shape_and_dtype():
    model = _chain(np.float32)
    f = fnn.compile_inference(model)
    with pytest.raises(TypeError, match=r"Sequential inference: x has dtype float64 but the "
                                        r"model computes in float32"):
        f(_x(2, np.float64))
    with pytest.raises(ValueError, match=r"Sequential inference: x must have shape "
                                         r"\(batch, 5\), got shape \(2, 4\)"):
        f(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        f(np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        f([[0.0] * 5])
    with pytest.raises(ValueError, match=r"Sequential.predict: x must have shape"):
        model.predict(np.zeros((2, 6), np.float32))
    with pytest.raises(TypeError, match="compile_inference: model must be a fastnn Module"):
        fnn.compile_inference("model")
    assert f(np.zeros((0, 5), np.float32)).shape == (0, 3)


def test_deepcopy_after_predict():
    model = _chain(np.float32)
    x = _x(3, np.float32)
    y = model.predict(x)
    clone = copy.deepcopy(model)
    assert "_inference" not in clone.__dict__
    assert_bitwise_equal(clone.predict(x), y)
    clone[0].weight.data[...] = 0
    assert_bitwise_equal(model.predict(x), y)
