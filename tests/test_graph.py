"""fastnn.Graph and the gates Add, Multiply, Maximum, Concat, Split."""
import importlib.util
import json
import subprocess
import sys
import tracemalloc
import zipfile

import warnings

import numpy as np
import pytest

import fastnn as fnn
from _util import assert_bitwise_equal, run_python
from fastnn._kernels import gates as _gates
from fastnn._kernels._core import GateOp

F64 = np.float64
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None


def lin(i, o, seed, dtype=F64, bias=True):
    return fnn.Linear(i, o, bias=bias, dtype=dtype, rng=seed)


def residual(dtype=F64, n=6, k=3):
    """The issue's example (small): x -> Linear -> ReLU -+-> Add -> Linear
                                        x -> Linear ------+"""
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(lin(n, n, 1, dtype), x)
    h = g.add(fnn.ReLU(), h)
    skip = g.add(lin(n, n, 2, dtype), x)
    s = g.add(fnn.Add(), h, skip)
    g.output(g.add(lin(n, k, 3, dtype), s))
    return g


def scalar_inputs(**kw):
    return {k: np.array([[v]], F64) for k, v in kw.items()}


# --------------------------------------------------------------- the lecture's examples
def test_lecture_add_multiply():
    """f = (x + y) z at x=-2, y=5, z=-4: df/dx = df/dy = z = -4, df/dz = x + y = 3."""
    g = fnn.Graph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(fnn.Add(), x, y)
    g.output(g.add(fnn.Multiply(), q, z))
    f = g(**scalar_inputs(x=-2.0, y=5.0, z=-4.0))
    assert f[0, 0] == -12.0
    grads = g.backward(np.ones((1, 1)))
    assert list(grads) == ["x", "y", "z"]
    assert grads["x"][0, 0] == -4.0
    assert grads["y"][0, 0] == -4.0
    assert grads["z"][0, 0] == 3.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lecture_sigmoid_neuron(dtype):
    """f = sigmoid(w0 x0 + w1 x1 + w2) at w = (2, -3, -3), x = (-1, -2)."""
    g = fnn.Graph()
    w0, x0, w1, x1, w2 = (g.input(n) for n in ("w0", "x0", "w1", "x1", "w2"))
    a = g.add(fnn.Multiply(), w0, x0)
    b = g.add(fnn.Multiply(), w1, x1)
    s = g.add(fnn.Add(), g.add(fnn.Add(), a, b), w2)
    g.output(g.add(fnn.Sigmoid(), s))
    vals = {k: np.array([[v]], dtype) for k, v in
            dict(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0).items()}
    f = g(**vals)
    assert f[0, 0] == pytest.approx(0.7311, abs=1e-4)      # sigmoid(1)
    gr = {k: float(v[0, 0]) for k, v in g.backward(np.ones((1, 1), dtype)).items()}
    expect = dict(w0=-0.197, w1=-0.393, w2=0.197, x0=0.393, x1=-0.590)
    for k, v in expect.items():
        assert gr[k] == pytest.approx(v, abs=1e-3), k
    # exactly the chain rule with the sigmoid's local gradient (1 - f) f
    d = (1 - float(f[0, 0])) * float(f[0, 0])
    assert gr["w0"] == pytest.approx(-1.0 * d, rel=1e-6)
    assert gr["x1"] == pytest.approx(-3.0 * d, rel=1e-6)


# --------------------------------------------------------------------------- gradcheck
def _three_consumers():
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(lin(5, 5, 1), x)
    a = g.add(fnn.Tanh(), h)
    b = g.add(fnn.Sigmoid(), h)
    c = g.add(lin(5, 5, 2), h)
    g.output(g.add(fnn.Add(), g.add(fnn.Multiply(), a, b), c))
    return g


def _mul_max():
    g = fnn.Graph()
    x, y = g.input("x"), g.input("y")
    a = g.add(lin(4, 4, 1), x)
    b = g.add(lin(4, 4, 2), y)
    m = g.add(fnn.Maximum(), a, b)
    g.output(g.add(fnn.Multiply(), m, g.add(fnn.Tanh(), a)))
    return g


def _concat_split():
    g = fnn.Graph()
    x, y = g.input("x"), g.input("y")
    h = g.add(fnn.Concat(), g.add(lin(3, 4, 1), x), y, g.add(fnn.Sigmoid(), x))
    p, q, r = g.add(fnn.Split([2, 5, 3]), h)
    g.output(g.add(lin(7, 2, 2), g.add(fnn.Concat(), p, r, p)), q)
    return g


def _shared():
    shared = lin(4, 4, 1)
    relu = fnn.ReLU()
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(relu, g.add(shared, x))
    h = g.add(relu, g.add(shared, h))          # the same Linear and ReLU again
    g.output(g.add(fnn.Add(), h, g.add(shared, x)))
    return g


def _two_outputs():
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(fnn.Tanh(), g.add(lin(4, 6, 1), x))
    g.output(g.add(lin(6, 2, 2), h), g.add(lin(6, 3, 3), h))
    g.output(h)                                # an internal value is also an output
    return g


def _nested():
    inner = fnn.Graph()
    a, b = inner.input("a"), inner.input("b")
    inner.output(inner.add(fnn.Multiply(), a, inner.add(lin(3, 3, 1), b)),
                 inner.add(fnn.Add(), a, b))
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(fnn.Sequential(lin(3, 3, 2), fnn.Tanh()), x)
    p, q = g.add(inner, x, h)
    g.output(g.add(fnn.Concat(), p, q))
    return g


GRAPHS = {"residual": (residual, [(5, 6)]), "three_consumers": (_three_consumers, [(4, 5)]),
          "mul_max": (_mul_max, [(6, 4), (6, 4)]), "concat_split": (_concat_split, [(3, 3), (3, 3)]),
          "shared": (_shared, [(4, 4)]), "two_outputs": (_two_outputs, [(3, 4)]),
          "nested": (_nested, [(2, 3)])}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_gradcheck_graphs(name, rng):
    make, shapes = GRAPHS[name]
    g = make()
    xs = [rng.standard_normal(s) for s in shapes]
    report = fnn.gradcheck(g, *xs)
    assert report.passed
    names = [e["name"] for e in report.entries]
    assert names[:len(xs)] == [f"input {i}" for i in range(len(xs))]
    assert len(names) == len(xs) + len(list(g.parameters()))


def test_shared_module_accumulates_both_uses(rng):
    g = _shared()
    shared = g._recs[1].module
    assert len(list(g.parameters())) == 2              # no duplicates
    assert [n for n, _ in g.named_parameters()] == ["1.weight", "1.bias"]
    x = rng.standard_normal((3, 4))
    g.zero_grad()
    g(x)
    g.backward(np.ones((3, 4)))
    # by hand: the three uses, each with its own saved input
    W, b = shared.weight.data, shared.bias.data
    z1 = x @ W.T + b
    h1 = np.maximum(z1, 0)
    z2 = h1 @ W.T + b
    gz2 = (z2 > 0) * 1.0
    gh1 = gz2 @ W
    gz1 = gh1 * (z1 > 0)
    gW = gz2.T @ h1 + gz1.T @ x + np.ones((3, 4)).T @ x
    np.testing.assert_allclose(shared.weight.grad, gW, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gate,n", [(fnn.Add, 2), (fnn.Multiply, 2), (fnn.Maximum, 2),
                                    (lambda: fnn.Concat(), 3), (lambda: fnn.Split([1, 3]), 1)])
def test_gradcheck_gates_as_modules(gate, n, rng):
    shapes = [(3, 4)] * n if n != 3 else [(3, 2), (3, 1), (3, 4)]
    assert fnn.gradcheck(gate(), *[rng.standard_normal(s) for s in shapes])


def test_maximum_tie_routes_to_first():
    a = np.array([[1.0, 2.0, -3.0, 0.0]])
    b = np.array([[1.0, 5.0, -3.0, -0.0]])
    g = fnn.Graph()
    x, y = g.input("a"), g.input("b")
    g.output(g.add(fnn.Maximum(), x, y))
    out = g(a, b)
    assert_bitwise_equal(out, np.array([[1.0, 5.0, -3.0, 0.0]]))
    gr = g.backward(np.array([[10.0, 20.0, 30.0, 40.0]]))
    assert_bitwise_equal(gr["a"], np.array([[10.0, 0.0, 30.0, 40.0]]))
    assert_bitwise_equal(gr["b"], np.array([[0.0, 20.0, 0.0, 0.0]]))


def test_same_value_twice_into_one_gate(rng):
    g = fnn.Graph()
    x = g.input("x")
    g.output(g.add(fnn.Multiply(), x, x))      # x**2: dx = 2 x dy
    X = rng.standard_normal((3, 4))
    dy = rng.standard_normal((3, 4))
    g(X)
    np.testing.assert_allclose(g.backward(dy)["x"], 2 * X * dy, rtol=1e-15)
    assert fnn.gradcheck(g, X)


# ------------------------------------------------------------------------ torch parity
def test_torch_parity_residual_and_gates(rng):
    torch = pytest.importorskip("torch")
    g = fnn.Graph()
    x, y = g.input("x"), g.input("y")
    l1, l2, l3, l4 = lin(6, 8, 1), lin(5, 8, 2), lin(8, 8, 3), lin(16, 3, 4)
    a = g.add(fnn.ReLU(), g.add(l1, x))
    b = g.add(fnn.Tanh(), g.add(l2, y))
    m = g.add(fnn.Maximum(), a, b)
    p = g.add(fnn.Multiply(), g.add(fnn.Sigmoid(), g.add(l3, m)), b)
    s = g.add(fnn.Add(), p, a)
    u, v = g.add(fnn.Split([3, 5]), s)
    c = g.add(fnn.Concat(), v, u, g.add(fnn.Add(), u, u), v)
    g.output(g.add(l4, c), m)
    X, Y = rng.standard_normal((7, 6)), rng.standard_normal((7, 5))
    d1, d2 = rng.standard_normal((7, 3)), rng.standard_normal((7, 8))
    o1, o2 = g(X, Y)
    grads = g.backward((d1, d2))

    T = {k: torch.tensor(v, requires_grad=True) for k, v in dict(X=X, Y=Y).items()}
    P = {n: torch.tensor(p.data, requires_grad=True) for n, p in g.named_parameters()}

    def tl(l, t):
        i = g._mod_name[id(l)]
        return t @ P[f"{i}.weight"].T + P[f"{i}.bias"]

    ta = torch.relu(tl(l1, T["X"]))
    tb = torch.tanh(tl(l2, T["Y"]))
    tm = torch.maximum(ta, tb)
    tp = torch.sigmoid(tl(l3, tm)) * tb
    ts = tp + ta
    tu, tv = ts[:, :3], ts[:, 3:]
    tc = torch.cat([tv, tu, tu + tu, tv], dim=1)
    t1 = tl(l4, tc)
    (t1 * torch.tensor(d1)).sum().add((tm * torch.tensor(d2)).sum()).backward()
    np.testing.assert_allclose(o1, t1.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(o2, tm.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["x"], T["X"].grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["y"], T["Y"].grad.numpy(), rtol=1e-10, atol=1e-12)
    for n, p in g.named_parameters():
        np.testing.assert_allclose(p.grad, P[n].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=n)


# ------------------------------------------------------------ gate kernels vs NumPy
def _views(rng, shape, dtype):
    """The same random values as a C array, a transposed copy's view and a sliced view."""
    a = rng.standard_normal(shape).astype(dtype)
    t = np.ascontiguousarray(a.T).T
    s = np.zeros((shape[0], shape[1] * 2 + 1), dtype)[:, 1::2]
    s[...] = a
    return [a, t, s]


@pytest.mark.parametrize("shape", [(7, 9), (1, 1), (0, 3), (3, 0), (300, 257)])
def test_binary_gates_match_numpy(shape, dtype, rng):
    for a in _views(rng, shape, dtype):
        b = rng.standard_normal(shape).astype(dtype)
        if b.size:
            b.flat[::3] = a.flat[::3]                       # ties
        g = rng.standard_normal(shape).astype(dtype)
        for gate, ref in ((fnn.Add(), np.add), (fnn.Multiply(), np.multiply),
                          (fnn.Maximum(), np.maximum)):
            out = gate(a, b)
            assert out.dtype == dtype and out.shape == shape
            assert_bitwise_equal(out, ref(a, b), f"{gate!r} forward")
            ga, gb = gate.backward(g)
            if isinstance(gate, fnn.Add):
                exp_a = exp_b = g
            elif isinstance(gate, fnn.Multiply):
                exp_a, exp_b = g * b, g * a
            else:
                mask = a >= b
                exp_a, exp_b = np.where(mask, g, 0).astype(dtype), \
                    np.where(mask, 0, g).astype(dtype)
            assert_bitwise_equal(ga, exp_a, f"{gate!r} grad a")
            assert_bitwise_equal(gb, exp_b, f"{gate!r} grad b")


def test_binary_gates_any_ndim(dtype, rng):
    for shape in [(5,), (2, 3, 4), ()]:
        a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
        m = fnn.Multiply()
        assert_bitwise_equal(m(a, b), np.asarray(a * b))
        ga, gb = m.backward(np.ones(shape, dtype))
        assert ga.shape == shape
        assert_bitwise_equal(ga, np.asarray(b))


def test_maximum_nan_propagates(dtype):
    a = np.array([[np.nan, 1.0, 2.0]], dtype)
    b = np.array([[0.0, np.nan, 1.0]], dtype)
    m = fnn.Maximum()
    np.testing.assert_array_equal(m(a, b), np.maximum(a, b))
    ga, gb = m.backward(np.ones((1, 3), dtype))
    np.testing.assert_array_equal(ga, [[1, 0, 1]])
    np.testing.assert_array_equal(gb, [[0, 1, 0]])


@pytest.mark.parametrize("rows", [0, 1, 5, 700])
def test_concat_split_match_numpy(rows, dtype, rng):
    parts = [_views(rng, (rows, n), dtype)[k % 3] for k, n in enumerate((3, 1, 100, 2))]
    c = fnn.Concat()
    out = c(*parts)
    assert_bitwise_equal(out, np.concatenate(parts, axis=1))
    g = rng.standard_normal(out.shape).astype(dtype)
    gs = c.backward(g)
    for gk, ek in zip(gs, np.split(g, np.cumsum([3, 1, 100])[:], axis=1)):
        assert_bitwise_equal(gk, np.ascontiguousarray(ek))
    for x in _views(rng, (rows, 106), dtype):
        s = fnn.Split([3, 1, 100, 2])
        outs = s(x)
        for o, e in zip(outs, np.split(x, np.cumsum([3, 1, 100]), axis=1)):
            assert_bitwise_equal(o, np.ascontiguousarray(e))
        gs = [rng.standard_normal(o.shape).astype(dtype) for o in outs]
        assert_bitwise_equal(s.backward(gs), np.concatenate(gs, axis=1))
        gs[1] = None                                   # an unused output: zero
        exp = np.concatenate([gs[0], np.zeros((rows, 1), dtype), gs[2], gs[3]], axis=1)
        assert_bitwise_equal(s.backward(gs), exp)


def test_kernels_float_branches_called_directly(dtype, rng):
    # each fused-type specialization computes (not just dispatches)
    a, b = (rng.standard_normal((4, 5)).astype(dtype) for _ in range(2))
    out = np.empty_like(a)
    for op, ref in ((GateOp.ADD, np.add), (GateOp.MUL, np.multiply), (GateOp.MAX, np.maximum)):
        fn = _gates._binary_forward["float" if dtype == np.float32 else "double"]
        out[...] = np.nan
        fn(a, b, out, op)
        assert_bitwise_equal(out, ref(a, b))


@pytest.mark.usefixtures("threads")
def test_one_and_two_threads_identical(dtype, rng):
    shape = (400, 300)       # above the parallel threshold
    a, b, g = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    s = rng.standard_normal((400, 600)).astype(dtype)
    results = []
    for n in (1, 2):
        fnn.set_num_threads(n)
        res = []
        for gate in (fnn.Add(), fnn.Multiply(), fnn.Maximum()):
            res.append(gate(a, b).copy())
            res.extend(x.copy() for x in gate.backward(g))
        c = fnn.Concat()
        res.append(c(a, b).copy())
        res.extend(x.copy() for x in c.backward(s))
        sp = fnn.Split([100, 500])
        res.extend(x.copy() for x in sp(s))
        res.append(sp.backward([s[:, :100], None]).copy())
        gr = residual(dtype, n=300, k=300)
        res.append(gr(a).copy())
        res.append(gr.backward(g)["x"].copy())
        res.extend(p.grad.copy() for p in gr.parameters())
        results.append(res)
    for r1, r2 in zip(*results):
        assert_bitwise_equal(r1, r2)


# --------------------------------------------------------------------- fusion, buffers
def _plan_kinds(g):
    P = g._plan or g._build_plan()
    return [(type(st).__name__, getattr(st, "act", None) is not None) for st in P.steps]


def test_fusion_only_for_single_consumer():
    g = residual()
    assert _plan_kinds(g) == [("LinearStep", True), ("LinearStep", False), ("GateStep", False),
                              ("LinearStep", False)]
    g2 = _three_consumers()
    assert ("LinearStep", True) not in _plan_kinds(g2)        # h feeds three consumers
    g3 = fnn.Graph()
    x = g3.input("x")
    h = g3.add(lin(3, 3, 1), x)
    g3.output(g3.add(fnn.ReLU(), h), h)                     # the Linear is also an output
    assert ("LinearStep", True) not in _plan_kinds(g3)
    g4 = fnn.Graph()
    x = g4.input("x")
    g4.output(g4.add(fnn.LeakyReLU(-0.5), g4.add(lin(3, 3, 1), x)))  # not fusable
    assert ("LinearStep", True) not in _plan_kinds(g4)


@pytest.mark.parametrize("act", [fnn.ReLU, fnn.Sigmoid, fnn.Tanh, lambda: fnn.LeakyReLU(0.2)])
def test_fused_bitwise_equals_unfused(act, dtype, rng):
    l1, a1, l2 = lin(13, 17, 1, dtype), act(), lin(17, 5, 2, dtype)
    g = fnn.Graph()
    x = g.input("x")
    g.output(g.add(l2, g.add(a1, g.add(l1, x))))
    assert _plan_kinds(g)[0] == ("LinearStep", True)
    X = (2 * rng.standard_normal((9, 13))).astype(dtype)
    dy = rng.standard_normal((9, 5)).astype(dtype)
    for _ in range(2):                                      # and in steady state
        g.zero_grad()
        out = g(X).copy()
        gx = g.backward(dy)["x"].copy()
        grads = [p.grad.copy() for p in g.parameters()]
        g.zero_grad()
        h = l2(a1(l1(X)))
        assert_bitwise_equal(out, h)
        gm = l1.backward(a1.backward(l2.backward(dy)))
        assert_bitwise_equal(gx, gm)
        for p, gp in zip(g.parameters(), grads):
            assert_bitwise_equal(gp, p.grad)


def test_training_buffers_reused_eval_fresh(rng):
    g = _concat_split()
    X, Y = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    o1 = g(X, Y)
    gr1 = g.backward([np.ones_like(o) for o in o1])
    o2 = g(X, Y)
    gr2 = g.backward([np.ones_like(o) for o in o2])
    assert all(a is b for a, b in zip(o1, o2))
    assert all(gr1[k] is gr2[k] for k in gr1)
    g.eval()
    e1, e2 = g(X, Y), g(X, Y)
    assert all(a is not b for a, b in zip(e1, e2))
    assert all(a is not b for a, b in zip(e1, o2))
    for a, b in zip(e1, o2):
        assert_bitwise_equal(a, b)
    assert all(st.ctx.x is None and st.ctx.y is None for st in g._plan.steps)
    with pytest.raises(RuntimeError, match="before a training-mode forward"):
        g.backward([np.ones_like(o) for o in e1])


def test_steady_state_allocates_no_arrays(rng):
    g = residual(n=256, k=256)
    X = rng.standard_normal((256, 256))
    dy = rng.standard_normal((256, 256))
    for _ in range(2):
        g.zero_grad()
        g(X)
        g.backward(dy)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        g.zero_grad()
        g(X)
        g.backward(dy)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak      # one (256, 256) float64 array is 512 KiB


def test_output_fed_back_as_input(rng):
    g = fnn.Graph()
    x = g.input("x")
    g.output(g.add(fnn.Multiply(), x, g.add(lin(4, 4, 1), x)))
    X = rng.standard_normal((3, 4))
    out = g(X)
    ref = fnn.Graph()      # the same function, fed a copy
    xr = ref.input("x")
    ref.output(ref.add(fnn.Multiply(), xr, ref.add(g._recs[1].module, xr)))
    exp_out = ref(out.copy()).copy()
    exp_g = ref.backward(np.ones((3, 4)))["x"].copy()
    got = g(out)
    assert_bitwise_equal(got, exp_out)
    assert_bitwise_equal(g.backward(np.ones((3, 4)))["x"], exp_g)


def test_input_grad_false_and_param_grads_equal(rng):
    g = _mul_max()
    X, Y = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    dy = rng.standard_normal((5, 4))
    g.zero_grad()
    g(X, Y)
    g.backward(dy)
    full = [p.grad.copy() for p in g.parameters()]
    g.zero_grad()
    g(X, Y)
    assert g.backward(dy, input_grad=False) is None
    for a, p in zip(full, g.parameters()):
        assert_bitwise_equal(p.grad, a)
    # gradients accumulate across backward calls
    g.backward(dy, input_grad=False)
    for a, p in zip(full, g.parameters()):
        np.testing.assert_allclose(p.grad, 2 * a, rtol=1e-15)


def test_several_outputs_and_none_gradient(rng):
    g = _two_outputs()
    X = rng.standard_normal((3, 4))
    o = g(X)
    assert isinstance(o, tuple) and [a.shape for a in o] == [(3, 2), (3, 3), (3, 6)]
    d = [rng.standard_normal(a.shape) for a in o]
    full = g.backward(d)["x"].copy()
    part = g.backward([d[0], None, None])["x"].copy()
    g2 = fnn.Graph()
    x = g2.input("x")
    g2.output(g2.add(g._recs[3].module, g2.add(g._recs[2].module, g2.add(g._recs[1].module, x))))
    g2(X)
    assert_bitwise_equal(part, g2.backward(d[0])["x"])
    assert not np.array_equal(full, part)


def test_unused_input_and_dead_nodes(rng):
    g = fnn.Graph()
    x, unused = g.input("x"), g.input("unused")
    dead = g.add(lin(4, 4, 1), x)                        # no output depends on it
    g.add(fnn.ReLU(), dead)
    g.output(g.add(fnn.Tanh(), x))
    assert len(g._build_plan().steps) == 1
    U = rng.standard_normal((2, 7))
    g(rng.standard_normal((3, 4)), U)
    gr = g.backward(np.ones((3, 4)))
    assert_bitwise_equal(gr["unused"], np.zeros_like(U))


def test_graph_input_as_output():
    g = fnn.Graph()
    x = g.input("x")
    g.output(x, g.add(fnn.Add(), x, x))
    X = np.arange(6.0).reshape(2, 3)
    a, b = g(X)
    assert a is X
    gr = g.backward((np.ones((2, 3)), np.full((2, 3), 2.0)))
    assert_bitwise_equal(gr["x"], np.full((2, 3), 5.0))


def test_repr_and_node_repr():
    g = residual()
    r = repr(g)
    assert "inputs: x" in r and "(4): Add() <- 2, 3" in r and "outputs: 5" in r
    g2 = fnn.Graph()
    x = g2.input("x")
    p, q = g2.add(fnn.Split([1, 2]), x)
    assert "input 'x'" in repr(x) and "output 1" in repr(q)


# ------------------------------------------------------------------------- error paths
def test_build_errors():
    g = fnn.Graph()
    x = g.input("x", features=6)
    other = fnn.Graph().input("x")
    with pytest.raises(TypeError, match="expected a fastnn Module"):
        g.add(np.tanh, x)
    with pytest.raises(TypeError, match="must be a Node"):
        g.add(fnn.ReLU(), np.zeros(3))
    with pytest.raises(ValueError, match="of another Graph"):
        g.add(fnn.ReLU(), other)
    parts = g.add(fnn.Split([3, 3]), x)
    with pytest.raises(TypeError, match="tuple of 2 nodes"):
        g.add(fnn.ReLU(), parts)
    with pytest.raises(TypeError, match=r"Add\(\) takes 2 inputs, got 1"):
        g.add(fnn.Add(), x)
    with pytest.raises(TypeError, match="at least one input"):
        g.add(fnn.ReLU())
    with pytest.raises(ValueError, match=r"expects 5 input features, but its input input "
                                         r"'x' has 6"):
        g.add(lin(5, 2, 1), x)
    h = g.add(lin(6, 4, 1), x)
    with pytest.raises(ValueError, match=r"Add\(\) needs two inputs of the same shape, but "
                                         r"node \d+ \(Linear.*\) has 4 features and input "
                                         r"'x' has 6"):
        g.add(fnn.Add(), h, x)
    with pytest.raises(ValueError, match=r"needs an input with 5 features .* has 4"):
        g.add(fnn.Split([2, 3]), h)
    with pytest.raises(ValueError, match="cannot contain itself"):
        g.add(g, x)
    with pytest.raises(ValueError, match="has no outputs yet"):
        g.add(fnn.Graph(), x)
    seq = fnn.Sequential(lin(6, 6, 2))
    g.add(seq, x)
    with pytest.raises(ValueError, match="already used at node"):
        g.add(seq, x)
    with pytest.raises(ValueError, match="already an input named 'x'"):
        g.input("x")
    with pytest.raises(TypeError, match="non-empty str"):
        g.input("")
    with pytest.raises(ValueError, match="features must be"):
        g.input("z", features=-1)
    with pytest.raises(TypeError, match="at least one node"):
        g.output()
    with pytest.raises(ValueError, match="of another Graph"):
        g.output(other)


def test_gate_construction_errors():
    with pytest.raises(ValueError, match="only axis=1"):
        fnn.Concat(axis=0)
    with pytest.raises(ValueError, match="only axis=1"):
        fnn.Split([1, 2], axis=0)
    with pytest.raises(ValueError, match="ints >= 1"):
        fnn.Split([1, 0])
    with pytest.raises(ValueError, match="ints >= 1"):
        fnn.Split([])
    with pytest.raises(TypeError, match="list of ints"):
        fnn.Split(3)


def test_call_errors(rng):
    g = fnn.Graph()
    with pytest.raises(RuntimeError, match="no outputs"):
        g()
    x, y = g.input("x", features=3), g.input("y")
    g.output(g.add(fnn.Add(), x, y))
    X = rng.standard_normal((2, 3))
    with pytest.raises(TypeError, match="missing input 'y'"):
        g(X)
    with pytest.raises(TypeError, match="unknown input 'z'"):
        g(X, z=X)
    with pytest.raises(TypeError, match="given twice"):
        g(X, x=X)
    with pytest.raises(TypeError, match="takes 2 inputs"):
        g(X, X, X)
    with pytest.raises(TypeError, match="must be a numpy.ndarray, got list"):
        g([1.0], X)
    with pytest.raises(ValueError, match=r"input 'x' must have 3 features .* \(2, 4\)"):
        g(np.zeros((2, 4)), X)
    with pytest.raises(ValueError, match=r"^Graph\[2\]: Add\(\): the inputs must have the same "
                                         r"shape .* \(2, 3\) and \(2, 5\)"):
        g(X, np.zeros((2, 5)))
    with pytest.raises(TypeError, match=r"^Graph\[2\]: Add\(\): input 1 has dtype float32"):
        g(X, X.astype(np.float32))
    h = fnn.Graph()
    u = h.input("u")
    h.output(h.add(lin(4, 2, 1), h.add(fnn.Concat(), u, u)))
    with pytest.raises(ValueError, match=r"^Graph\[2\]: Linear\(in_features=4, out_features=2\):"
                                         r" input has 6 features, expected 4 \(input shape "
                                         r"\(5, 6\)"):
        h(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"Concat\(axis=1\): input 1 has 2 rows but input 0 "
                                         r"has 3"):
        fnn.Concat()(np.zeros((3, 1)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"Split\(\[1, 2\]\): input must be 2-D \(batch, 3\)"):
        fnn.Split([1, 2])(np.zeros((3, 4)))


def test_backward_errors(rng):
    g = _two_outputs()
    with pytest.raises(RuntimeError, match="before a training-mode forward"):
        g.backward([None, None, None])
    X = rng.standard_normal((3, 4))
    o = g(X)
    with pytest.raises(TypeError, match="has 3 outputs; pass a tuple or list of 3"):
        g.backward(np.ones((3, 2)))
    with pytest.raises(ValueError, match="has 3 outputs, got 2 gradients"):
        g.backward([np.ones((3, 2)), np.ones((3, 3))])
    with pytest.raises(ValueError, match=r"gradient of output 1 \(node \d+ \(Linear.*\)\) has "
                                         r"shape \(3, 2\), expected \(3, 3\)"):
        g.backward([o[0], np.ones((3, 2)), o[2]])
    with pytest.raises(TypeError, match="has dtype float32, the output has float64"):
        g.backward([o[0].astype(np.float32), o[1], o[2]])
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        g.backward([1.0, o[1], o[2]])
    g.add(fnn.ReLU(), fnn.nn.Node(g, 1))          # changes the graph
    with pytest.raises(RuntimeError, match="before a training-mode forward"):
        g.backward(list(o))
    for gate, xs in ((fnn.Add(), 2), (fnn.Maximum(), 2), (fnn.Concat(), 1),
                     (fnn.Split([1]), 1)):
        with pytest.raises(RuntimeError, match="before a training-mode forward"):
            gate.backward(np.ones((1, 1)))
    m = fnn.Multiply()
    m(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"Multiply\(\): grad_out must have the output's "
                                         r"shape \(2, 2\), got \(2, 3\)"):
        m.backward(np.ones((2, 3)))
    s = fnn.Split([1, 1])
    s(np.ones((2, 2)))
    with pytest.raises(TypeError, match="list of 2 gradients"):
        s.backward(np.ones((2, 1)))


def _saved_record(path):
    with np.load(path) as z:
        return json.loads(str(z["__fastnn__"][()])), {k: z[k] for k in z.files}


def _rewrite(path, meta, arrays):
    arrays = dict(arrays)
    arrays["__fastnn__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_load_rejects_cycle_and_unknown_node(tmp_path):
    g = residual()
    fnn.save(g, tmp_path / "g.npz")
    meta, arrays = _saved_record(tmp_path / "g.npz")
    nodes = meta["arch"]["nodes"]
    nodes[1]["inputs"] = [[4, 0]]          # Linear 1 reads the Add that reads it: a cycle
    _rewrite(tmp_path / "cyc.npz", meta, arrays)
    with pytest.raises(ValueError, match="cycle through nodes node 1"):
        fnn.load(tmp_path / "cyc.npz")
    nodes[1]["inputs"] = [[17, 0]]
    _rewrite(tmp_path / "unk.npz", meta, arrays)
    with pytest.raises(ValueError, match="reads an unknown node"):
        fnn.load(tmp_path / "unk.npz")
    nodes[1]["inputs"] = [[0, 0]]
    nodes[1]["module"] = 99
    _rewrite(tmp_path / "bad.npz", meta, arrays)
    with pytest.raises(ValueError, match="bad node 1"):
        fnn.load(tmp_path / "bad.npz")


# ------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("name", list(GRAPHS))
def test_save_load_round_trip(name, tmp_path, rng):
    make, shapes = GRAPHS[name]
    g = make()
    xs = [rng.standard_normal(s) for s in shapes]
    fnn.save(g, tmp_path / "g.npz")
    meta, _ = _saved_record(tmp_path / "g.npz")
    assert meta["arch"]["type"] == "Graph"
    assert {"modules", "nodes", "outputs"} <= set(meta["arch"])
    h = fnn.load(tmp_path / "g.npz")
    assert isinstance(h, fnn.Graph)
    assert [n for n, _ in h.named_parameters()] == [n for n, _ in g.named_parameters()]
    assert h.input_names == g.input_names
    g.eval()
    h.eval()
    a, b = g(*xs), h(*xs)
    for u, v in zip(a if isinstance(a, tuple) else [a], b if isinstance(b, tuple) else [b]):
        assert_bitwise_equal(u, v)
    assert fnn.gradcheck(h, *xs)


def test_save_load_keeps_sharing(tmp_path, rng):
    g = _shared()
    fnn.save(g, tmp_path / "s.npz")
    meta, _ = _saved_record(tmp_path / "s.npz")
    assert len(meta["arch"]["modules"]) == 3        # Linear, ReLU, Add: each once
    h = fnn.load(tmp_path / "s.npz")
    mods = [r.module for r in h._recs if r.module is not None and type(r.module) is fnn.Linear]
    assert len(mods) == 3 and mods[0] is mods[1] is mods[2]


def test_save_refuses_sharing_across_containers(tmp_path):
    shared = lin(3, 3, 1)
    g = fnn.Graph()
    x = g.input("x")
    g.output(g.add(fnn.Sequential(shared, fnn.ReLU()), g.add(shared, x)))
    with pytest.raises(ValueError, match="shared weights"):
        fnn.save(g, tmp_path / "x.npz")


def test_loaded_file_is_a_zip_with_params(tmp_path):
    g = residual(np.float32)
    fnn.save(g, tmp_path / "g.npz")
    with zipfile.ZipFile(tmp_path / "g.npz") as z:
        assert "param:1.weight.npy" in z.namelist()


# ----------------------------------------------------------------------------- Trainer
def _blobs(rng, n=300):
    y = rng.integers(0, 3, n)
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    return (centers[y] + 0.5 * rng.standard_normal((n, 2))).astype(np.float32), y


@pytest.mark.parametrize("compiled", [False, True])
def test_trainer_fits_a_graph(compiled, rng):
    X, y = _blobs(rng)
    g = fnn.Graph()
    x = g.input("x", features=2)
    h = g.add(fnn.ReLU(), g.add(fnn.Linear(2, 16, rng=1), x))
    r = g.add(fnn.Tanh(), g.add(fnn.Linear(16, 16, rng=2), h))
    g.output(g.add(fnn.Linear(16, 3, rng=3), g.add(fnn.Add(), h, r)))
    opt = fnn.SGD(g.parameters(), lr=0.1, momentum=0.9)
    tr = fnn.Trainer(g, fnn.CrossEntropyLoss(), opt, batch_size=32, epochs=15,
                     progress=False, compiled=compiled)
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # a Graph of these nodes compiles
        hist = tr.fit(X, y)
    if compiled:
        assert tr._get_step().compiled
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert tr.evaluate(X, y)["accuracy"] > 0.9
    assert tr.predict(X).shape == (300, 3)


# ----------------------------------------------------------------------------- example
@pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn is not installed")
def test_residual_mlp_example_quick():
    import pathlib
    script = pathlib.Path(__file__).resolve().parent.parent / "examples" / "residual_mlp.py"
    proc = run_python([str(script), "--quick", "--threads", "1"], timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "OK: test accuracy" in out and "Add() <-" in out
