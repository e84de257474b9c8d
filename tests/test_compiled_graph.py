"""compile_step on a Graph: a graph of Linear, activation and gate nodes trains in one
kernel call, bitwise equal to its module path (Graph.forward / Graph.backward) for every
gate, branch pattern, loss, dtype, SGD option and thread count; the Trainer's compiled
epochs equal its module path; graphs that do not compile fall back with one warning; a
graph changed after compiling is re-planned."""
import warnings

import numpy as np
import pytest

import fastnn as fnn
from test_compiled_step import LOSSES, SGDS, assert_same, batches, module_step


def lin(i, o, dt, s, bias=True):
    return fnn.Linear(i, o, bias=bias, dtype=dt, rng=s)


def residual(dt):
    """The lecture's skip connection: relu(W2 relu(W1 x)) + x, twice, then a head."""
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(fnn.ReLU(), g.add(lin(6, 12, dt, 1), x))
    for k in range(2):
        r = g.add(fnn.ReLU(), g.add(lin(12, 12, dt, 2 + k), h))
        h = g.add(fnn.Add(), h, r)
    g.output(g.add(lin(12, 4, dt, 9), h))
    return g


def act_after_gate(dt):
    """Standalone activations after gates (relu(a + b), tanh(max(a, b)))."""
    g = fnn.Graph()
    x = g.input("x", features=6)
    a, b = g.add(lin(6, 8, dt, 1), x), g.add(lin(6, 8, dt, 2), x)
    s = g.add(fnn.ReLU(), g.add(fnn.Add(), a, b))
    m = g.add(fnn.Tanh(), g.add(fnn.Maximum(), s, g.add(lin(8, 8, dt, 3), s)))
    g.output(g.add(lin(8, 4, dt, 4), m))
    return g


def multiply_gate(dt):
    """A gated unit: sigmoid(W1 x) * (W2 x); the multiply gate swaps."""
    g = fnn.Graph()
    x = g.input("x")
    gate = g.add(fnn.Sigmoid(), g.add(lin(6, 10, dt, 1), x))
    val = g.add(lin(6, 10, dt, 2), x)
    g.output(g.add(lin(10, 4, dt, 3), g.add(fnn.Multiply(), gate, val)))
    return g


def concat_split(dt):
    """Split into three blocks (one unused: its gradient is zero), concat two branches."""
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(fnn.Tanh(), g.add(lin(6, 12, dt, 1), x))
    p, q, _unused = g.add(fnn.Split([5, 4, 3]), h)
    c = g.add(fnn.Concat(), g.add(fnn.LeakyReLU(0.1), g.add(lin(5, 7, dt, 2), p)), q, p)
    g.output(g.add(lin(16, 4, dt, 3), c))
    return g


def shared(dt):
    """One Linear used at two places and a value read by three consumers (gradients add
    in a fixed order); the input itself is also added to."""
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(lin(6, 6, dt, 1), x)
    tied = lin(6, 6, dt, 2)
    a = g.add(fnn.ReLU(), g.add(tied, h))
    b = g.add(fnn.ReLU(), g.add(tied, a))
    s = g.add(fnn.Add(), g.add(fnn.Add(), a, b), g.add(fnn.Add(), h, x))
    g.output(g.add(lin(6, 4, dt, 3, bias=False), g.add(fnn.Multiply(), s, s)))
    return g


def nested_chain(dt):
    """A Graph whose first node's output feeds a gate twice (Add(h, h))."""
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(fnn.Sigmoid(), g.add(lin(6, 9, dt, 1), x))
    g.output(g.add(lin(9, 4, dt, 2), g.add(fnn.Add(), h, h)))
    return g


GRAPHS = {"residual": residual, "act-after-gate": act_after_gate,
          "multiply": multiply_gate, "concat-split": concat_split, "shared": shared,
          "add-self": nested_chain}
STEPS = (8, 5, 19, 1, 19, 32, 7)


def run_graph_pair(build, make_loss, opt_kw, data):
    m1, m2 = build(), build()
    lf1, lf2 = make_loss(), make_loss()
    o1, o2 = fnn.SGD(m1.parameters(), **opt_kw), fnn.SGD(m2.parameters(), **opt_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = fnn.compile_step(m1, lf1, o1)
    assert step.compiled, step.reason
    for i, (x, y) in enumerate(data):
        la = step(x, y)
        lb = module_step(m2, lf2, o2, x, y)
        assert la == lb, (i, la, lb)
        assert_same(m1, o1, m2, o2, f"step {i}")
    return m1, o1, step


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("opt", ["plain", "all"])
def test_graph_steps_equal_the_module_path(name, opt, dtype, rng):
    data = batches(rng, STEPS, 6, 4, dtype, False)
    run_graph_pair(lambda: GRAPHS[name](dtype), LOSSES["xent-mean"], SGDS[opt], data)


@pytest.mark.parametrize("loss", ["mse-sum", "svm0.5-mean", "xent-sum"])
def test_graph_every_loss(loss, dtype, rng):
    data = batches(rng, STEPS, 6, 4, dtype, loss.startswith("mse"))
    run_graph_pair(lambda: residual(dtype), LOSSES[loss], SGDS["momentum"], data)


@pytest.mark.parametrize("name", ["residual", "shared", "concat-split"])
def test_graph_bitwise_across_threads(name, threads, dtype, rng):
    """1 and 2 threads give identical parameters (and equal the module path); the batch is
    large enough (6000 x 12 values) for the elementwise kernels to go parallel."""
    data = batches(rng, (6000, 257), 6, 4, dtype, False)
    results = []
    for n in (1, 2):
        fnn.set_num_threads(n)
        m, _, _ = run_graph_pair(lambda: GRAPHS[name](dtype), LOSSES["xent-mean"],
                                 SGDS["nesterov"], data)
        results.append([p.data.copy() for p in m.parameters()])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_graph_blas_engine(engine, dtype, rng):
    data = batches(rng, (16, 9), 6, 4, dtype, False)
    run_graph_pair(lambda: residual(dtype), LOSSES["xent-mean"], SGDS["all"], data)


def test_trainer_compiled_graph_equals_module_path(dtype, rng):
    X = rng.standard_normal((203, 6)).astype(dtype)
    y = rng.integers(0, 4, 203)
    res = []
    for compiled in (True, False):
        g = concat_split(dtype)
        opt = fnn.SGD(g.parameters(), lr=0.05, momentum=0.9)
        tr = fnn.Trainer(g, fnn.CrossEntropyLoss(), opt, batch_size=32, epochs=3,
                         progress=False, compiled=compiled)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = tr.fit(X, y)
        assert (tr._get_step() is not None and tr._get_step().compiled) is compiled
        res.append((h["loss"], h["accuracy"], [p.data.copy() for p in g.parameters()]))
    assert res[0][0] == res[1][0] and res[0][1] == res[1][1]
    for a, b in zip(res[0][2], res[1][2]):
        assert np.array_equal(a, b)


def test_changed_graph_is_replanned(dtype, rng):
    """Adding a node after compiling (reusing existing modules: no new attribute) re-plans
    the step on its next call; it stays equal to the module path."""
    g1, g2 = residual(dtype), residual(dtype)
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    o1, o2 = fnn.SGD(g1.parameters(), lr=0.1), fnn.SGD(g2.parameters(), lr=0.1)
    step = fnn.compile_step(g1, lf1, o1)
    data = batches(rng, (8, 8, 8), 6, 4, dtype, False)
    for i, (x, y) in enumerate(data):
        if i == 1:
            for g in (g1, g2):       # a second head output replaces the first: relu(out)
                (j, p), = g._outputs
                from fastnn.nn import Node
                relu = g.add(fnn.ReLU(), Node(g, j, p))
                g._outputs[:] = []
                g.output(relu)
        assert step(x, y) == module_step(g2, lf2, o2, x, y)
        assert step.compiled
        assert_same(g1, o1, g2, o2, f"step {i}")
    # the new ReLU fused into the head Linear (now its only consumer)
    assert step._kernel.n_ops == 6 and type(g1._plan.steps[-1].act) is fnn.ReLU


def _fallback(build, why, dtype):
    g = build()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        step = fnn.compile_step(g, fnn.CrossEntropyLoss(), fnn.SGD(g.parameters(), lr=0.1))
    assert [x.category for x in w] == [RuntimeWarning]
    assert not step.compiled and why in step.reason, step.reason
    return step


def test_graphs_that_do_not_compile_fall_back(dtype, rng):
    def two_inputs():
        g = fnn.Graph()
        a, b = g.input("a"), g.input("b")
        g.output(g.add(fnn.Add(), g.add(lin(6, 4, dtype, 1), a), g.add(lin(6, 4, dtype, 2), b)))
        return g

    def negative_leaky():
        g = fnn.Graph()
        x = g.input("x")
        h = g.add(fnn.Add(), g.add(lin(6, 4, dtype, 1), x), g.add(lin(6, 4, dtype, 2), x))
        g.output(g.add(fnn.LeakyReLU(-0.2), h))
        return g

    def nested():
        g = fnn.Graph()
        x = g.input("x")
        g.output(g.add(fnn.Sequential(lin(6, 4, dtype, 1)), x))
        return g

    def no_features():
        g = fnn.Graph()
        x = g.input("x")
        g.output(g.add(lin(6, 4, dtype, 1), g.add(fnn.Add(), x, x)))
        return g

    _fallback(two_inputs, "2 inputs", dtype)
    _fallback(negative_leaky, "reads its input in backward", dtype)
    _fallback(nested, "the graph has a Sequential", dtype)
    step = _fallback(no_features, "features=n", dtype)
    x, y = batches(rng, (5,), 6, 4, dtype, False)[0]
    assert np.isfinite(step(x, y))        # the module path runs


def test_declared_features_let_a_gate_first_graph_compile(dtype, rng):
    def build():
        g = fnn.Graph()
        x = g.input("x", features=6)
        g.output(g.add(lin(6, 4, dtype, 1), g.add(fnn.Maximum(), x, g.add(fnn.Tanh(), x))))
        return g
    data = batches(rng, (7, 7), 6, 4, dtype, False)
    run_graph_pair(build, LOSSES["xent-mean"], SGDS["momentum"], data)


def test_compiled_graph_rejects_bad_input(dtype, rng):
    g = residual(dtype)
    step = fnn.compile_step(g, fnn.CrossEntropyLoss(), fnn.SGD(g.parameters(), lr=0.1))
    x, y = batches(rng, (5,), 6, 4, dtype, False)[0]
    with pytest.raises(ValueError, match=r"shape \(batch >= 1, 6\)"):
        step(x[:, :5], y)
    with pytest.raises(ValueError, match="labels must be in"):
        step(x, y + 4)
    assert step.in_features == 6 and step.out_features == 4
