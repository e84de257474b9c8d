"""Gradient clipping: fastnn.clip_grad_norm_ / clip_grad_value_ against torch.nn.utils
(skipped without torch) and NumPy, the fixed-order norm (bitwise identical for any thread
count), each fused-type branch of _kernels/clip.pyx, the argument checks, and the
clip_grad_norm= option of compile_step / Trainer (bitwise equal to the module path)."""
import math
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn._kernels import clip as kc
from _util import assert_bitwise_equal

try:
    import torch
except ImportError:          # the torch parity tests skip; everything else runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

NORM_TYPES = (1.0, 2.0, 3.5, math.inf)
NT_IDS = ["1", "2", "3.5", "inf"]
# parameter shapes: a matrix, a vector, a scalar-like, an empty one, a 3-D one
SHAPES = [(7, 5), (5,), (1,), (0,), (3, 0), (2, 3, 4)]
CHUNK = 8192                 # clip.pyx's CLIP_CHUNK
KERNEL = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _params(rng, dtype, shapes=SHAPES, scale=3.0):
    ps = []
    for s in shapes:
        p = fnn.Parameter(np.zeros(s, dtype))
        p.grad = (rng.standard_normal(s) * scale).astype(dtype)
        ps.append(p)
    return ps


def _torch_params(ps, stale=()):
    """torch twins of fastnn Parameters (gradients copied; grad None where stale)."""
    out = []
    for i, p in enumerate(ps):
        t = torch.nn.Parameter(torch.zeros(p.shape, dtype=torch.from_numpy(p.data).dtype))
        t.grad = None if i in stale else torch.from_numpy(p.grad.copy())
        out.append(t)
    return out


def _ref_total(grads, p):
    """The total p-norm in float64 from the values (torch's norm of norms)."""
    g = [np.abs(np.asarray(a, np.float64)).ravel() for a in grads]
    if p == math.inf:
        return max((a.max() for a in g if a.size), default=0.0)
    norms = np.array([(a ** p).sum() ** (1 / p) for a in g])
    return float((norms ** p).sum() ** (1 / p))


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# ------------------------------------------------------------------ torch parity
@needs_torch
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=NT_IDS)
@pytest.mark.parametrize("max_norm", [0.5, 1e3, 0.0])
def test_clip_grad_norm_matches_torch_float64(norm_type, max_norm, rng):
    ps = _params(rng, np.float64)
    ps[1].zero_grad()        # no gradient since zero_grad: counts as zero (torch: grad None)
    # torch raises for the inf-norm of an empty gradient; fastnn counts it as 0
    keep = [i for i, p in enumerate(ps) if not (norm_type == math.inf and p.size == 0)]
    ts = _torch_params([ps[i] for i in keep], stale=(keep.index(1),))
    total = fnn.clip_grad_norm_(ps, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type)
    assert type(total) is float
    assert _rel(total, expected.item()) <= 1e-12
    for i, t in zip(keep, ts):
        if t.grad is None:
            assert not ps[i].grad.any()
            continue
        np.testing.assert_allclose(ps[i].grad, t.grad.numpy(), rtol=1e-12, atol=0)


@needs_torch
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=NT_IDS)
def test_clip_grad_norm_float32_numerically(norm_type, rng):
    ps = _params(rng, np.float32, [(300, 70), (70,), (0,), (9, 9, 9)])
    ps = [p for p in ps if not (norm_type == math.inf and p.size == 0)]
    before = [p.grad.copy() for p in ps]
    ts = _torch_params(ps)
    total = fnn.clip_grad_norm_(ps, 1.0, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(ts, 1.0, norm_type)
    # fastnn accumulates in float64: equal to the float64 norm of the float32 values ...
    assert _rel(total, _ref_total(before, norm_type)) <= 1e-12
    # ... and torch (float32 accumulation) to its own accuracy
    assert _rel(total, expected.item()) <= 1e-5
    coef = np.float32(1.0 / (total + 1e-6))          # the coefficient in the grad's dtype
    for p, b, t in zip(ps, before, ts):
        assert p.grad.dtype == np.float32
        assert_bitwise_equal(p.grad, b * coef)
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=2e-5, atol=1e-7)


@needs_torch
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_gradients_like_torch(bad, dtype, rng):
    ps = _params(rng, dtype, [(4, 3), (3,)])
    ps[0].grad[1, 2] = bad
    ts = _torch_params(ps)
    total = fnn.clip_grad_norm_(ps, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(ts, 1.0)
    assert (math.isnan(total) and expected.isnan()) or total == expected.item()
    for p, t in zip(ps, ts):      # NaN norm: all NaN; inf norm: 0, NaN where infinite
        np.testing.assert_array_equal(p.grad, t.grad.numpy())


@needs_torch
@pytest.mark.parametrize("clip_value", [0.0, 0.7, 1e9, math.inf])
def test_clip_grad_value_matches_torch(clip_value, dtype, rng):
    ps = _params(rng, dtype)
    ps[0].grad[0, 0] = np.nan
    ps[2].zero_grad()
    ts = _torch_params(ps, stale=(2,))
    assert fnn.clip_grad_value_(ps, clip_value) is None
    torch.nn.utils.clip_grad_value_(ts, clip_value)
    for p, t in zip(ps, ts):
        if t.grad is None:
            assert not p.grad.any()
        else:
            np.testing.assert_array_equal(p.grad, t.grad.numpy())


# ------------------------------------------------------------------ semantics without torch
def test_clip_grad_norm_numpy_reference(dtype, rng):
    ps = _params(rng, dtype)
    before = [p.grad.astype(np.float64) for p in ps]
    for p_ in NORM_TYPES:
        for p, b in zip(ps, before):
            p.grad = b
        total = fnn.clip_grad_norm_(ps, 0.25, p_)
        assert _rel(total, _ref_total(before, p_)) <= 1e-12
        coef = 0.25 / (total + 1e-6)
        for p, b in zip(ps, before):
            np.testing.assert_allclose(p.grad, b * coef,
                                       rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_no_clipping_below_max_norm_leaves_gradients(dtype, rng):
    ps = _params(rng, dtype, [(6, 4), (4,)])
    before = [p.grad.copy() for p in ps]
    total = fnn.clip_grad_norm_(ps, math.inf)          # inf: only the norm
    assert total > 0
    assert fnn.clip_grad_norm_(ps, total * 2) == total
    for p, b in zip(ps, before):
        assert_bitwise_equal(p.grad, b)


def test_accepts_one_parameter_generators_and_mixed_dtypes(rng):
    a = fnn.Parameter(np.zeros(3, np.float32))
    a.grad = np.array([3.0, 0.0, -4.0], np.float32)
    b = fnn.Parameter(np.zeros(2, np.float64))
    b.grad = np.array([0.0, 12.0])
    assert fnn.clip_grad_norm_(a, 100.0) == 5.0
    assert fnn.clip_grad_norm_((p for p in (a, b)), 100.0) == 13.0
    assert fnn.clip_grad_norm_([], 1.0) == 0.0
    with pytest.warns(UserWarning, match="empty generator"):
        assert fnn.clip_grad_norm_((p for p in ()), 1.0) == 0.0
    fnn.clip_grad_value_(a, 3.5)
    np.testing.assert_array_equal(a.grad, [3.0, 0.0, -3.5])
    m = fnn.Linear(3, 2, rng=0)
    m.weight.grad = np.full((2, 3), 2.0, np.float32)
    m.bias.grad = np.full(2, 2.0, np.float32)
    assert fnn.clip_grad_norm_(m.parameters(), 1.0, "inf") == 2.0


def test_stale_gradient_counts_as_zero_and_reads_zero(dtype):
    p = fnn.Parameter(np.zeros(4, dtype))
    p.grad = np.ones(4, dtype)
    p.zero_grad()
    q = fnn.Parameter(np.zeros(1, dtype))
    q.grad = np.array([2.0], dtype)
    assert fnn.clip_grad_norm_([p, q], 1.0) == 2.0
    assert not p.grad.any()
    np.testing.assert_allclose(q.grad, [1.0 / (2.0 + 1e-6) * 2.0], rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_if_nonfinite(bad, dtype, rng):
    ps = _params(rng, dtype, [(5, 5), (5,)])
    ps[1].grad[3] = bad
    before = [p.grad.copy() for p in ps]
    for nt in (2.0, 1.0, math.inf, 3.0):
        with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm .* is "
                                               r"(nan|inf).*error_if_nonfinite=False"):
            fnn.clip_grad_norm_(ps, 1.0, nt, error_if_nonfinite=True)
        for p, b in zip(ps, before):       # nothing changed
            assert_bitwise_equal(p.grad, b)
    ps[1].grad[3] = 1.0
    assert math.isfinite(fnn.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True))


def test_inf_norm_propagates_nan_anywhere(dtype, rng):
    for n in (5, 8, 17, CHUNK + 3, 3 * CHUNK):
        for pos in (0, n // 2, n - 1):
            g = rng.standard_normal(n).astype(dtype)
            g[pos] = np.nan
            assert math.isnan(kc._pow_sum[KERNEL[g.dtype]](g, math.inf))
            g[pos] = -np.inf
            assert kc._pow_sum[KERNEL[g.dtype]](g, math.inf) == math.inf


# ------------------------------------------------------------------ argument checks
def _p():
    p = fnn.Parameter(np.zeros(3))
    p.grad = np.ones(3)
    return p


@pytest.mark.parametrize("fn, kw", [
    (fnn.clip_grad_norm_, dict(max_norm=-1.0)),
    (fnn.clip_grad_norm_, dict(max_norm=float("nan"))),
    (fnn.clip_grad_norm_, dict(max_norm=1.0, norm_type=0)),
    (fnn.clip_grad_norm_, dict(max_norm=1.0, norm_type=-2.0)),
    (fnn.clip_grad_norm_, dict(max_norm=1.0, norm_type=-math.inf)),
    (fnn.clip_grad_norm_, dict(max_norm=1.0, norm_type=float("nan"))),
    (fnn.clip_grad_value_, dict(clip_value=-0.5)),
    (fnn.clip_grad_value_, dict(clip_value=float("nan"))),
])
def test_bad_values(fn, kw):
    p = _p()
    with pytest.raises(ValueError, match=fn.__name__):
        fn([p], **kw)
    assert_bitwise_equal(p.grad, np.ones(3))


@pytest.mark.parametrize("fn, kw", [
    (fnn.clip_grad_norm_, dict(max_norm="1")),
    (fnn.clip_grad_norm_, dict(max_norm=True)),
    (fnn.clip_grad_norm_, dict(max_norm=None)),
    (fnn.clip_grad_norm_, dict(max_norm=1.0, norm_type="fro")),
    (fnn.clip_grad_norm_, dict(max_norm=1.0, norm_type=None)),
    (fnn.clip_grad_value_, dict(clip_value="1")),
])
def test_bad_types(fn, kw):
    with pytest.raises(TypeError, match=fn.__name__):
        fn([_p()], **kw)


@pytest.mark.parametrize("fn", [fnn.clip_grad_norm_, fnn.clip_grad_value_])
def test_bad_parameters(fn):
    arg = (1.0,)
    with pytest.raises(TypeError, match="pass model.parameters"):
        fn(fnn.Linear(2, 2), *arg)
    with pytest.raises(TypeError, match="numpy array"):
        fn(np.ones(3), *arg)
    with pytest.raises(TypeError, match="iterable of Parameters, got int"):
        fn(3, *arg)
    with pytest.raises(TypeError, match=r"parameters\[1\] is a ndarray"):
        fn([_p(), np.ones(3)], *arg)
    p = _p()
    with pytest.raises(ValueError, match=r"parameters\[1\] appears more than once"):
        fn([p, p], *arg)


# ------------------------------------------------------------------ the kernels themselves
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, CHUNK - 1, CHUNK, CHUNK + 1, 64 * CHUNK + 5])
def test_kernel_branches_against_numpy(n, dtype, rng):
    """Each fused-type specialization of every entry point, numerically."""
    k = KERNEL[dtype]
    g = (rng.standard_normal(n) * 2).astype(dtype)
    a = np.abs(g.astype(np.float64))
    for p in NORM_TYPES:
        s = kc._pow_sum[k](g, p)
        e = (a.max() if n else 0.0) if p == math.inf else float((a ** p).sum())
        assert _rel(s, e) <= 1e-13 or s == e == 0
        nrm = kc._grad_norm[k](g, p)
        e = e if p in (1.0, math.inf) else e ** (1 / p)
        assert _rel(nrm, e) <= 1e-13 or nrm == e == 0
    h = g.copy()
    kc._scale[k](h, 0.3)
    assert_bitwise_equal(h, g * dtype.type(0.3))
    h = g.copy()
    kc._clamp[k](h, -0.5, 1.25)
    assert_bitwise_equal(h, np.minimum(np.maximum(g, dtype.type(-0.5)), dtype.type(1.25)))


def test_total_norm_and_coefficient_entry_points(rng):
    gs = [rng.standard_normal(n).astype(dt) for n, dt in
          ((100, np.float32), (0, np.float64), (CHUNK * 3 + 1, np.float64), (5, np.float32))]
    for p in NORM_TYPES:
        assert _rel(kc._total_norm(gs, p), _ref_total(gs, p)) <= 1e-13
    assert kc._total_norm([], 2.0) == 0.0
    assert kc._clip_coef(2.0, 3.0) == 2.0 / (3.0 + 1e-6)
    before = [g.copy() for g in gs]
    kc._clip_scale(gs, 1.0)                  # coef >= 1: nothing
    kc._clip_scale(gs, 7.0)
    for g, b in zip(gs, before):
        assert_bitwise_equal(g, b)
    kc._clip_scale(gs, 0.5)
    for g, b in zip(gs, before):
        assert_bitwise_equal(g, b * g.dtype.type(0.5))


@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=NT_IDS)
def test_norm_bitwise_identical_for_1_2_4_threads(norm_type, dtype, threads, rng):
    # several chunks per parameter, more than one parallel group (64 chunks) in the largest
    sizes = [70 * CHUNK + 123, 1, 9 * CHUNK, 3000]
    gs = [(rng.standard_normal(n) * 10).astype(dtype) for n in sizes]
    k = KERNEL[dtype]
    sums = {nt: kc._pow_sum[k](gs[0], norm_type, nt) for nt in (1, 2, 3, 4)}
    totals = {nt: kc._total_norm(gs, norm_type, nt) for nt in (1, 2, 3, 4)}
    for nt in (2, 3, 4):
        assert np.float64(sums[nt]).tobytes() == np.float64(sums[1]).tobytes()
        assert np.float64(totals[nt]).tobytes() == np.float64(totals[1]).tobytes()
    # and through the public function, with the process-wide thread setting
    res = {}
    for nt in (1, 2, 4):
        fnn.set_num_threads(nt)
        ps = [fnn.Parameter(np.zeros(g.shape, dtype)) for g in gs]
        for p, g in zip(ps, gs):
            p.grad = g
        res[nt] = (fnn.clip_grad_norm_(ps, 1.0, norm_type), [p.grad.copy() for p in ps])
    for nt in (2, 4):
        assert np.float64(res[nt][0]).tobytes() == np.float64(res[1][0]).tobytes()
        assert res[nt][0] == totals[1]
        for a, b in zip(res[nt][1], res[1][1]):
            assert_bitwise_equal(a, b, f"{nt} threads vs 1")
    assert _rel(totals[1], _ref_total(gs, norm_type)) <= 1e-12


# ------------------------------------------------------------------ compiled step, Trainer
def _net(dtype, wide=False):
    h = 400 if wide else 16            # wide: a 400x300 weight, parallel norm chunks
    return fnn.Sequential(fnn.Linear(300 if wide else 5, h, dtype=dtype, rng=0), fnn.Tanh(),
                          fnn.Linear(h, 16, dtype=dtype, rng=1), fnn.ReLU(),
                          fnn.Linear(16, 3, dtype=dtype, rng=2))


def _module_step(model, lf, opt, x, y, max_norm):
    model.zero_grad()
    opt.zero_grad()
    loss = lf(model(x), y)
    model.backward(lf.backward(), input_grad=False)
    norm = fnn.clip_grad_norm_(opt.params, max_norm)
    opt.step()
    return loss, norm


def _assert_same_params(ma, mb, what):
    for (name, a), b in zip(ma.named_parameters(), mb.parameters()):
        assert_bitwise_equal(a.data, b.data, f"{what}: {name}")
        assert_bitwise_equal(a.grad, b.grad, f"{what}: {name}.grad")


@pytest.mark.parametrize("wide", [False, True], ids=["small", "wide"])
@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["plain", "momentum"])
@pytest.mark.parametrize("max_norm", [0.05, 1e6])
def test_compiled_step_with_clipping_bitwise_equals_module_path(max_norm, momentum, wide,
                                                                dtype, threads, rng):
    k0 = 300 if wide else 5
    data = [((rng.standard_normal((13, k0)) * 3).astype(dtype), rng.integers(0, 3, 13))
            for _ in range(5)]
    for nt in (1, 2):
        fnn.set_num_threads(nt)
        ma, mb = _net(dtype, wide), _net(dtype, wide)
        oa = fnn.SGD(ma.parameters(), lr=0.3, momentum=momentum)
        ob = fnn.SGD(mb.parameters(), lr=0.3, momentum=momentum)
        lf = fnn.CrossEntropyLoss()
        step = fnn.compile_step(ma, lf, oa, clip_grad_norm=max_norm)
        assert step.compiled and step.clip_grad_norm == max_norm
        assert step.last_grad_norm is None
        for x, y in data:
            loss = step(x, y)
            lb, nb = _module_step(mb, lf, ob, x, y, max_norm)
            assert loss == lb
            assert step.last_grad_norm == nb
        _assert_same_params(ma, mb, f"{nt} threads")
        if max_norm < 1:
            assert nb > max_norm            # the clipping did happen


@pytest.mark.parametrize("graph", ["shared", "residual", "concat-split"])
def test_compiled_graph_with_clipping_and_a_parameter_subset(graph, dtype, threads, rng):
    """A Graph (a shared Linear: one gradient summed from two uses), and an optimizer over
    part of the parameters, in reverse order: the norm is over what the optimizer updates,
    in its order."""
    from test_compiled_graph import GRAPHS
    for nt in (1, 2):
        fnn.set_num_threads(nt)
        ma, mb = GRAPHS[graph](dtype), GRAPHS[graph](dtype)
        sub = lambda m: list(m.parameters())[::-2]              # noqa: E731
        oa = fnn.SGD(sub(ma), lr=0.2, momentum=0.5)
        ob = fnn.SGD(sub(mb), lr=0.2, momentum=0.5)
        lf = fnn.CrossEntropyLoss()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            step = fnn.compile_step(ma, lf, oa, clip_grad_norm=0.1)
        assert step.compiled, step.reason
        for _ in range(4):
            x = (rng.standard_normal((11, 6)) * 3).astype(dtype)
            y = rng.integers(0, 4, 11)
            loss = step(x, y)
            lb, nb = _module_step(mb, lf, ob, x, y, 0.1)
            assert loss == lb and step.last_grad_norm == nb
        _assert_same_params(ma, mb, f"{graph}, {nt} threads")


def test_compiled_step_clipping_option(dtype, rng):
    x = rng.standard_normal((8, 5)).astype(dtype)
    y = rng.integers(0, 3, 8)
    lf = fnn.CrossEntropyLoss()
    ma, mb = _net(dtype), _net(dtype)
    oa, ob = fnn.SGD(ma.parameters(), lr=0.1), fnn.SGD(mb.parameters(), lr=0.1)
    step = fnn.compile_step(ma, lf, oa)
    assert step.clip_grad_norm is None
    step(x, y)
    assert step.last_grad_norm is None              # off: not computed
    mb.zero_grad()
    ob.zero_grad()
    lf(mb(x), y)
    mb.backward(lf.backward(), input_grad=False)
    ob.step()
    step.clip_grad_norm = 0.01                      # on from the next step, no re-planning
    step(x, y)
    _, nb = _module_step(mb, lf, ob, x, y, 0.01)
    assert step.last_grad_norm == nb
    _assert_same_params(ma, mb, "after switching clipping on")
    step.clip_grad_norm = None
    step(x, y)
    assert step.last_grad_norm == nb                # the last step that clipped
    for bad, exc in ((-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError)):
        with pytest.raises(exc, match="clip_grad_norm"):
            fnn.compile_step(ma, lf, oa, clip_grad_norm=bad)
        with pytest.raises(exc, match="clip_grad_norm"):
            step.clip_grad_norm = bad
        with pytest.raises(exc, match="Trainer.*clip_grad_norm"):
            fnn.Trainer(ma, lf, oa, clip_grad_norm=bad)


def test_module_path_fallback_clips_too(dtype, rng):
    # a model that does not compile (a LeakyReLU with a negative slope): the module path
    def net():
        return fnn.Sequential(fnn.Linear(5, 8, dtype=dtype, rng=0), fnn.LeakyReLU(-0.1),
                              fnn.Linear(8, 3, dtype=dtype, rng=1))
    ma, mb = net(), net()
    oa, ob = fnn.SGD(ma.parameters(), lr=0.2), fnn.SGD(mb.parameters(), lr=0.2)
    lf = fnn.CrossEntropyLoss()
    step = fnn.compile_step(ma, lf, oa, clip_grad_norm=0.1, warn=False)
    assert not step.compiled
    for _ in range(3):
        x = (rng.standard_normal((6, 5)) * 4).astype(dtype)
        y = rng.integers(0, 3, 6)
        loss, nb = _module_step(mb, lf, ob, x, y, 0.1)
        assert step(x, y) == loss
        assert step.last_grad_norm == nb
    _assert_same_params(ma, mb, "module path")
    assert nb > 0.1


@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["plain", "momentum"])
def test_trainer_with_clipping_compiled_equals_module_path(momentum, dtype, threads):
    rng = np.random.default_rng(5)
    X = (rng.standard_normal((250, 5)) * 3).astype(dtype)
    y = rng.integers(0, 3, 250)
    for nt in (1, 2):
        fnn.set_num_threads(nt)
        runs = []
        for compiled in (True, False):
            model = _net(dtype)
            o = fnn.SGD(model.parameters(), lr=0.2, momentum=momentum)
            tr = fnn.Trainer(model, fnn.CrossEntropyLoss(), o, batch_size=32, epochs=3,
                             seed=4, progress=False, compiled=compiled, clip_grad_norm=0.2)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                h = tr.fit(X, y)
            runs.append((model, h, tr))
        (m1, h1, t1), (m2, h2, _) = runs
        _assert_same_params(m1, m2, f"Trainer, {nt} threads")
        assert h1["loss"] == h2["loss"]
        assert t1._step.compiled and t1._step.last_grad_norm is not None
    # clipping changes the result (it is on)
    model = _net(dtype)
    o = fnn.SGD(model.parameters(), lr=0.2, momentum=momentum)
    fnn.Trainer(model, fnn.CrossEntropyLoss(), o, batch_size=32, epochs=3, seed=4,
                progress=False).fit(X, y)
    assert any(a.data.tobytes() != b.data.tobytes()
               for a, b in zip(model.parameters(), m1.parameters()))
