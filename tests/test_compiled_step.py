"""compile_step / CompiledStep: the one-call compiled training step is bitwise equal to the
module path (zero_grad, forward, loss, backward, SGD.step) for every loss, activation, dtype,
SGD option, thread count and engine; it can be mixed with module steps and follows
hyperparameter / structure / dtype changes; models that do not compile fall back with one
warning; bad inputs are rejected before anything changes; the seeded epoch shuffle; parity
with a float64 reference and with PyTorch."""
import itertools
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn._kernels import step as _ks
from _util import assert_bitwise_equal

ACTS = {"sigmoid": fnn.Sigmoid, "relu": fnn.ReLU, "tanh": fnn.Tanh,
        "leaky0.1": lambda: fnn.LeakyReLU(0.1), "leaky0": lambda: fnn.LeakyReLU(0.0),
        "none": None}
LOSSES = {"mse-mean": lambda: fnn.MSELoss(), "mse-sum": lambda: fnn.MSELoss("sum"),
          "xent-mean": lambda: fnn.CrossEntropyLoss(),
          "xent-sum": lambda: fnn.CrossEntropyLoss("sum"),
          "svm1-mean": lambda: fnn.SVMLoss(1.0), "svm0.5-mean": lambda: fnn.SVMLoss(0.5),
          "svm0.5-sum": lambda: fnn.SVMLoss(0.5, "sum")}
SGDS = {"plain": dict(lr=0.1),
        "momentum": dict(lr=0.05, momentum=0.9),
        "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
        "dampening": dict(lr=0.05, momentum=0.9, dampening=0.3),
        "weight_decay": dict(lr=0.05, momentum=0.5, weight_decay=0.01),
        "maximize": dict(lr=0.01, maximize=True),
        "all": dict(lr=0.002, momentum=0.8, nesterov=True, weight_decay=0.05, maximize=True)}
SIZES = (6, 11, 9, 4)
# a batch larger than the first one (workspace growth), a single row, repeated sizes
BATCHES = (8, 5, 19, 1, 19, 32, 7)


# ------------------------------------------------------------------------------ helpers
def mlp(act="relu", dtype=np.float32, bias=True, sizes=SIZES, seed=0):
    make = ACTS[act] if isinstance(act, str) else act
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(fnn.Linear(sizes[i], sizes[i + 1], bias=bias, dtype=dtype,
                                 rng=seed + i))
        if make is not None and i < len(sizes) - 2:
            layers.append(make())
    return fnn.Sequential(*layers)


def batch(rng, m, nin, nout, dtype, mse):
    x = rng.standard_normal((m, nin)).astype(dtype)
    if mse:
        y = rng.standard_normal((m, nout)).astype(dtype)
    else:
        y = rng.integers(0, nout, m)
    return x, y


def batches(rng, sizes, nin, nout, dtype, mse):
    return [batch(rng, m, nin, nout, dtype, mse) for m in sizes]


def module_step(model, lf, opt, x, y):
    """The module path compile_step must equal."""
    model.zero_grad()
    opt.zero_grad()
    loss = lf(model(x), y)
    model.backward(lf.backward(), input_grad=False)
    opt.step()
    return loss


def snapshot(model, opt):
    sd = opt.state_dict() if hasattr(opt, "state_dict") else opt.inner.state_dict()
    return ([p.data.copy() for p in model.parameters()], sd)


def assert_same(m1, o1, m2, o2, what="", grads=True):
    """Parameters, gradients and optimizer state bitwise equal."""
    p1, p2 = list(m1.named_parameters()), list(m2.named_parameters())
    assert [n for n, _ in p1] == [n for n, _ in p2]
    for (name, a), (_, b) in zip(p1, p2):
        assert_bitwise_equal(a.data, b.data, f"{what} {name}")
        if grads:
            assert_bitwise_equal(a.grad, b.grad, f"{what} {name}.grad")
    s1 = o1.state_dict() if hasattr(o1, "state_dict") else o1.inner.state_dict()
    s2 = o2.state_dict() if hasattr(o2, "state_dict") else o2.inner.state_dict()
    for k in s1:
        if k != "momentum_buffers":
            assert s1[k] == s2[k], (what, k, s1[k], s2[k])
    for i, (a, b) in enumerate(zip(s1["momentum_buffers"], s2["momentum_buffers"])):
        assert (a is None) == (b is None), (what, i, a, b)
        if a is not None:
            assert_bitwise_equal(a, b, f"{what} momentum buffer {i}")


def assert_unchanged(model, opt, snap, what=""):
    params, sd = snap
    for i, (p, before) in enumerate(zip(model.parameters(), params)):
        assert_bitwise_equal(p.data, before, f"{what} param {i}")
    now = opt.state_dict()
    assert now["steps"] == sd["steps"], what
    for a, b in zip(now["momentum_buffers"], sd["momentum_buffers"]):
        assert (a is None) == (b is None), what
        if a is not None:
            assert_bitwise_equal(a, b, what)


def run_pair(build, make_loss, opt_kw, data, make_opt=fnn.SGD, expect_compiled=True):
    """Train two identical models, one with compile_step, one with the module code, and
    compare everything after every step.  Returns the compiled (model, opt, step)."""
    m1, m2 = build(), build()
    lf1, lf2 = make_loss(), make_loss()
    o1, o2 = make_opt(m1.parameters(), **opt_kw), make_opt(m2.parameters(), **opt_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if not expect_compiled else "error")
        step = fnn.compile_step(m1, lf1, o1)
    assert step.compiled is expect_compiled, step.reason
    for i, (x, y) in enumerate(data):
        la = step(x, y)
        lb = module_step(m2, lf2, o2, x, y)
        assert isinstance(la, float) and np.isfinite(la), (i, la)
        assert la == lb, (i, la, lb)
        assert_same(m1, o1, m2, o2, f"step {i} (batch {len(x)})")
    return m1, o1, step


# ------------------------------------------------------ 1. bitwise equality, every combo
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("loss", list(LOSSES))
def test_step_bitwise_equals_module_path(loss, act, bias, dtype, threads, rng):
    data = batches(rng, BATCHES, SIZES[0], SIZES[-1], dtype, loss.startswith("mse"))
    for nt in (1, 2):
        fnn.set_num_threads(nt)
        run_pair(lambda: mlp(act, dtype, bias), LOSSES[loss], dict(lr=0.05, momentum=0.9),
                 data)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("opt", list(SGDS))
def test_step_bitwise_every_sgd_option(opt, bias, dtype, threads, rng):
    for nt, loss in itertools.product((1, 2), ("xent-mean", "mse-sum")):
        fnn.set_num_threads(nt)
        data = batches(rng, BATCHES, SIZES[0], SIZES[-1], dtype, loss.startswith("mse"))
        run_pair(lambda: mlp("tanh", dtype, bias), LOSSES[loss], SGDS[opt], data)


@pytest.mark.parametrize("loss", ["xent-mean", "mse-sum", "svm0.5-mean"])
def test_step_bitwise_both_engines(loss, engine, dtype, rng):
    data = batches(rng, BATCHES, SIZES[0], SIZES[-1], dtype, loss.startswith("mse"))
    run_pair(lambda: mlp("relu", dtype), LOSSES[loss], SGDS["all"], data)


BIG = (64, 160, 96, 10)     # large enough for the native GEMM to run on 2 threads


@pytest.mark.parametrize("loss", ["xent-mean", "mse-mean"])
def test_step_big_layers_bitwise_across_thread_counts(loss, dtype, native, threads, rng):
    """The compiled step equals the module path on layers big enough to go parallel, and
    its results do not depend on the thread count."""
    data = batches(rng, (150, 200, 150), BIG[0], BIG[-1], dtype, loss.startswith("mse"))
    results = []
    for nt in (1, 2):
        fnn.set_num_threads(nt)
        m, o, _ = run_pair(lambda: mlp("leaky0.1", dtype, sizes=BIG), LOSSES[loss],
                           SGDS["momentum"], data)
        results.append([p.data.copy() for p in m.parameters()])
    for a, b in zip(*results):
        assert_bitwise_equal(b, a, "2 threads vs 1")


NESTED = {
    "identities-nested": lambda dt: fnn.Sequential(
        fnn.Identity(), fnn.Sequential(fnn.Linear(6, 9, dtype=dt, rng=1), fnn.ReLU()),
        fnn.Identity(), fnn.Sequential(fnn.Sequential(fnn.Linear(9, 7, dtype=dt, rng=2)),
                                       fnn.Tanh()),
        fnn.Linear(7, 4, dtype=dt, rng=3), fnn.Identity()),
    "act-in-next-sequential": lambda dt: fnn.Sequential(
        fnn.Linear(6, 9, dtype=dt, rng=1),
        fnn.Sequential(fnn.Sigmoid(), fnn.Linear(9, 4, dtype=dt, rng=2))),
    "identity-between-linear-and-act": lambda dt: fnn.Sequential(
        fnn.Linear(6, 9, dtype=dt, rng=1), fnn.Identity(), fnn.LeakyReLU(0.0),
        fnn.Linear(9, 4, dtype=dt, rng=2)),
    "nobias-nested": lambda dt: fnn.Sequential(
        fnn.Sequential(fnn.Linear(6, 9, bias=False, dtype=dt, rng=1), fnn.LeakyReLU(0.1)),
        fnn.Sequential(fnn.Linear(9, 4, dtype=dt, rng=2))),
    "single-linear-sequential": lambda dt: fnn.Sequential(fnn.Linear(6, 4, dtype=dt, rng=1)),
    "bare-linear": lambda dt: fnn.Linear(6, 4, dtype=dt, rng=1),
    "linear-then-act-only": lambda dt: fnn.Sequential(fnn.Linear(6, 4, dtype=dt, rng=1),
                                                      fnn.Sigmoid()),
}


@pytest.mark.parametrize("arch", list(NESTED))
@pytest.mark.parametrize("loss", ["xent-sum", "mse-mean"])
def test_step_nested_sequential_and_identity(arch, loss, dtype, rng):
    data = batches(rng, BATCHES, 6, 4, dtype, loss.startswith("mse"))
    run_pair(lambda: NESTED[arch](dtype), LOSSES[loss], SGDS["nesterov"], data)


def test_step_optimizer_over_a_subset_in_another_order(dtype, rng):
    """SGD over some of the model's parameters, in reverse order: the others get their
    gradient but keep their values, as in the module path."""
    m1, m2 = mlp("relu", dtype), mlp("relu", dtype)
    pick = lambda m: list(m.parameters())[:1:-1]          # noqa: E731 (last two, reversed)
    o1, o2 = fnn.SGD(pick(m1), **SGDS["all"]), fnn.SGD(pick(m2), **SGDS["all"])
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    first = [p.data.copy() for p in m1.parameters()]
    step = fnn.compile_step(m1, lf1, o1)
    assert step.compiled, step.reason
    for x, y in batches(rng, BATCHES, 6, 4, dtype, False):
        assert step(x, y) == module_step(m2, lf2, o2, x, y)
        assert_same(m1, o1, m2, o2)
    for p, a in zip(list(m1.parameters())[:2], first):
        assert_bitwise_equal(p.data, a, "a parameter outside the optimizer changed")


def test_step_preallocated_batch_size_and_growth(dtype, rng):
    m, m2 = mlp("relu", dtype), mlp("relu", dtype)
    o, o2 = fnn.SGD(m.parameters(), lr=0.1), fnn.SGD(m2.parameters(), lr=0.1)
    lf, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    step = fnn.compile_step(m, lf, o, batch_size=16)
    assert step._kernel.capacity == 16
    for n in (16, 3, 40, 16):
        x, y = batch(rng, n, 6, 4, dtype, False)
        assert step(x, y) == module_step(m2, lf2, o2, x, y)
        assert_same(m, o, m2, o2, f"batch {n}")
    assert step._kernel.capacity == 40
    assert o.steps == 4


def test_step_returns_python_float_and_attributes(rng):
    m = mlp()
    lf, o = fnn.MSELoss(), fnn.SGD(m.parameters(), lr=0.1)
    step = fnn.compile_step(m, lf, o)
    assert isinstance(step, fnn.CompiledStep)
    assert step.model is m and step.loss_fn is lf and step.optimizer is o
    assert step.compiled is True and step.reason is None
    assert repr(step) == "CompiledStep(compiled)"
    x, y = batch(rng, 5, 6, 4, np.float32, True)
    loss = step(x, y)
    assert type(loss) is float and np.isfinite(loss)
    assert o.steps == 1


# ------------------------------------------------------------------------- 2. mixing
def test_mixing_compiled_and_module_steps(dtype, rng):
    m1, m2 = mlp("sigmoid", dtype), mlp("sigmoid", dtype)
    o1, o2 = fnn.SGD(m1.parameters(), **SGDS["all"]), fnn.SGD(m2.parameters(), **SGDS["all"])
    lf1, lf2 = fnn.SVMLoss(0.5), fnn.SVMLoss(0.5)
    step = fnn.compile_step(m1, lf1, o1)
    for i, (x, y) in enumerate(batches(rng, BATCHES * 2, 6, 4, dtype, False)):
        if i % 3 == 1:
            la = module_step(m1, lf1, o1, x, y)
        else:
            la = step(x, y)
        assert la == module_step(m2, lf2, o2, x, y), i
        assert_same(m1, o1, m2, o2, f"step {i}")
    assert step.compiled


def test_hyperparameters_changed_between_steps(dtype, rng):
    """lr / momentum / nesterov / dampening / weight_decay / maximize are read on every
    call; a momentum buffer survives momentum-0 steps, as in SGD.step."""
    m1, m2 = mlp("tanh", dtype), mlp("tanh", dtype)
    o1, o2 = fnn.SGD(m1.parameters(), lr=0.1), fnn.SGD(m2.parameters(), lr=0.1)
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    step = fnn.compile_step(m1, lf1, o1)
    schedule = [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.0, lr=0.03),
                dict(momentum=0.9), dict(nesterov=True, lr=0.2),
                dict(nesterov=False, dampening=0.5), dict(dampening=0.0, weight_decay=0.1),
                dict(maximize=True, lr=0.01), dict(maximize=False, momentum=0.0),
                dict(momentum=0.5, weight_decay=0.0), dict(lr=0.0)]
    data = batches(rng, [11] * len(schedule), 6, 4, dtype, False)
    for i, (change, (x, y)) in enumerate(zip(schedule, data)):
        for o in (o1, o2):
            for k, v in change.items():
                setattr(o, k, v)
        assert step(x, y) == module_step(m2, lf2, o2, x, y)
        assert_same(m1, o1, m2, o2, f"step {i} after {change}")
        if i == 0:
            assert o1.state_dict()["momentum_buffers"][0] is None
    # lr = 0: the parameters stay
    before = [p.data.copy() for p in m1.parameters()]
    step(*data[0])
    for p, b in zip(m1.parameters(), before):
        assert_bitwise_equal(p.data, b)


def test_load_state_dict_between_steps(dtype, rng):
    m1, m2 = mlp("relu", dtype), mlp("relu", dtype)
    o1, o2 = fnn.SGD(m1.parameters(), **SGDS["nesterov"]), \
        fnn.SGD(m2.parameters(), **SGDS["nesterov"])
    lf1, lf2 = fnn.MSELoss(), fnn.MSELoss()
    step = fnn.compile_step(m1, lf1, o1)
    data = batches(rng, [9] * 9, 6, 4, dtype, True)
    fresh_opt, fresh_model = o1.state_dict(), m1.state_dict()
    saved = None
    for i, (x, y) in enumerate(data):
        if i == 3:
            saved = (m1.state_dict(), o1.state_dict())
        if i == 6:             # back to step 3's state (new buffer arrays), then continue
            for m, o in ((m1, o1), (m2, o2)):
                m.load_state_dict(saved[0])
                o.load_state_dict(saved[1])
        assert step(x, y) == module_step(m2, lf2, o2, x, y)
        assert_same(m1, o1, m2, o2, f"step {i}")
    # a state without momentum buffers (before any step): the next step starts them anew
    for m, o in ((m1, o1), (m2, o2)):
        m.load_state_dict(fresh_model)
        o.load_state_dict(fresh_opt)
    for x, y in data[:3]:
        assert step(x, y) == module_step(m2, lf2, o2, x, y)
        assert_same(m1, o1, m2, o2, "after loading a fresh state")
    assert o1.steps == 3 and step.compiled


def test_parameter_data_assignment_between_steps(dtype, rng):
    m1, m2 = mlp("relu", dtype), mlp("relu", dtype)
    o1, o2 = fnn.SGD(m1.parameters(), lr=0.1), fnn.SGD(m2.parameters(), lr=0.1)
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    step = fnn.compile_step(m1, lf1, o1)
    data = batches(rng, [7] * 4, 6, 4, dtype, False)
    for i, (x, y) in enumerate(data):
        if i == 2:
            w = rng.standard_normal(m1[0].weight.shape).astype(dtype)
            m1[0].weight.data = w
            m2[0].weight.data = w
        assert step(x, y) == module_step(m2, lf2, o2, x, y)
        assert_same(m1, o1, m2, o2, f"step {i}")


@pytest.mark.parametrize("to", [np.float64, np.float32], ids=["f32-to-f64", "f64-to-f32"])
def test_dtype_conversion_after_compiling(to, rng):
    frm = np.float32 if to == np.float64 else np.float64
    m1, m2 = mlp("tanh", frm), mlp("tanh", frm)
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    o1, o2 = fnn.SGD(m1.parameters(), **SGDS["momentum"]), \
        fnn.SGD(m2.parameters(), **SGDS["momentum"])
    step = fnn.compile_step(m1, lf1, o1)
    for x, y in batches(rng, [8, 8], 6, 4, frm, False):
        assert step(x, y) == module_step(m2, lf2, o2, x, y)
    m1.to(to)
    m2.to(to)
    x_old, y = batch(rng, 8, 6, 4, frm, False)
    snap = snapshot(m1, o1)
    with pytest.raises(TypeError, match=f"x has dtype {np.dtype(frm)}.*computes in "
                                        f"{np.dtype(to)}"):
        step(x_old, y)
    assert_unchanged(m1, o1, snap)
    for x, y in batches(rng, [8, 12, 3], 6, 4, to, False):
        assert step(x, y) == module_step(m2, lf2, o2, x, y)
        assert_same(m1, o1, m2, o2, f"after .to({np.dtype(to)})")
    assert step.compiled and step.dtype == np.dtype(to)
    assert all(p.dtype == np.dtype(to) for p in m1.parameters())


def test_replacing_an_activation_after_compiling(dtype, rng):
    m1, m2 = mlp("relu", dtype), mlp("relu", dtype)
    o1, o2 = fnn.SGD(m1.parameters(), **SGDS["momentum"]), \
        fnn.SGD(m2.parameters(), **SGDS["momentum"])
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    step = fnn.compile_step(m1, lf1, o1)
    data = batches(rng, [10] * 6, 6, 4, dtype, False)
    for i, (x, y) in enumerate(data):
        if i == 2:
            setattr(m1, "1", fnn.Tanh())
            setattr(m2, "1", fnn.Tanh())
        if i == 4:
            setattr(m1, "3", fnn.LeakyReLU(0.3))
            setattr(m2, "3", fnn.LeakyReLU(0.3))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            la = step(x, y)
        assert la == module_step(m2, lf2, o2, x, y)
        assert_same(m1, o1, m2, o2, f"step {i}")
        assert step.compiled


def test_replacing_a_linear_after_compiling_falls_back_then_recompiles(dtype, rng):
    """A new Linear whose parameters the optimizer does not hold: the next call warns once
    and runs the module path (same results); putting the old layer back compiles again."""
    m1, m2 = mlp("relu", dtype), mlp("relu", dtype)
    o1, o2 = fnn.SGD(m1.parameters(), **SGDS["all"]), fnn.SGD(m2.parameters(), **SGDS["all"])
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    step = fnn.compile_step(m1, lf1, o1)
    data = batches(rng, [10] * 8, 6, 4, dtype, False)
    old1, old2 = m1[2], m2[2]
    for i, (x, y) in enumerate(data):
        if i == 2:
            setattr(m1, "2", fnn.Linear(11, 9, dtype=dtype, rng=7))
            setattr(m2, "2", fnn.Linear(11, 9, dtype=dtype, rng=7))
        if i == 5:
            setattr(m1, "2", old1)
            setattr(m2, "2", old2)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            la = step(x, y)
        msgs = [str(x.message) for x in w]
        if i == 2:
            assert len(w) == 1 and w[0].category is RuntimeWarning, msgs
            assert "not a parameter of the model" in msgs[0]
        else:
            assert not w, msgs
        assert step.compiled is not (2 <= i < 5), (i, step.reason)
        assert (step.reason is None) is step.compiled
        assert la == module_step(m2, lf2, o2, x, y)
        assert_same(m1, o1, m2, o2, f"step {i}")


def test_call_time_fallback_warning_points_at_the_caller(rng):
    m = mlp()
    step = fnn.compile_step(m, fnn.CrossEntropyLoss(), fnn.SGD(m.parameters(), lr=0.1))
    setattr(m, "2", fnn.Linear(11, 9, rng=7))
    x, y = batch(rng, 5, 6, 4, np.float32, False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        step(x, y)
    assert len(w) == 1 and w[0].category is RuntimeWarning
    assert w[0].filename == __file__, w[0].filename


@pytest.mark.parametrize("loss", ["xent-mean", "mse-sum"])
def test_linear_used_twice_shares_weights(loss, dtype, rng):
    """The same Linear at two places: its gradient is the sum of both uses."""
    def build():
        sq = fnn.Linear(9, 9, dtype=dtype, rng=5)
        return fnn.Sequential(fnn.Linear(6, 9, dtype=dtype, rng=4), fnn.Tanh(), sq,
                              fnn.ReLU(), sq, fnn.Sigmoid(), sq,
                              fnn.Linear(9, 4, dtype=dtype, rng=6))
    data = batches(rng, BATCHES, 6, 4, dtype, loss.startswith("mse"))
    m, _, _ = run_pair(build, LOSSES[loss], SGDS["momentum"], data)
    assert len(list(m.parameters())) == 6


def test_parameter_shared_by_two_linears(rng):
    def build():
        a, b = fnn.Linear(6, 6, rng=0), fnn.Linear(6, 6, rng=1)
        b.weight = a.weight
        return fnn.Sequential(a, fnn.ReLU(), b, fnn.ReLU(), fnn.Linear(6, 4, rng=2))
    data = batches(rng, [10, 10], 6, 4, np.float32, False)
    run_pair(build, LOSSES["xent-mean"], dict(lr=0.1), data)


@pytest.mark.parametrize("attr,value,loss", [("margin", 0.25, "svm1-mean"),
                                             ("reduction", "sum", "xent-mean")])
def test_loss_attributes_changed_between_steps(attr, value, loss, rng):
    m1, m2 = mlp(), mlp()
    lf1, lf2 = LOSSES[loss](), LOSSES[loss]()
    o1, o2 = fnn.SGD(m1.parameters(), lr=0.1), fnn.SGD(m2.parameters(), lr=0.1)
    step = fnn.compile_step(m1, lf1, o1)
    x, y = batch(rng, 8, 6, 4, np.float32, False)
    assert step(x, y) == module_step(m2, lf2, o2, x, y)
    setattr(lf1, attr, value)
    setattr(lf2, attr, value)
    assert step(x, y) == module_step(m2, lf2, o2, x, y)
    assert_same(m1, o1, m2, o2)


# ------------------------------------------------------------------------ 3. fallback
class Scale(fnn.Module):
    """A custom module (not compilable): y = 2 x."""

    def forward(self, x):
        return x * 2

    def backward(self, grad_out, input_grad=True):
        return grad_out * 2 if input_grad else None


class WrappedSGD:
    """An optimizer-like object that is not a fastnn.SGD."""

    def __init__(self, params, **kw):
        self.inner = fnn.SGD(params, **kw)

    def zero_grad(self):
        self.inner.zero_grad()

    def step(self):
        self.inner.step()


class MyXent(fnn.CrossEntropyLoss):
    pass


def _fb_models(dt):
    lin = lambda i, o, s: fnn.Linear(i, o, dtype=dt, rng=s)    # noqa: E731
    return {
        # (an activation first or after another activation compiles as its own op since
        # the normalization layers: tests/test_norm.py)
        "negative-leaky": (lambda: fnn.Sequential(lin(6, 9, 1), fnn.LeakyReLU(-0.1),
                                                  lin(9, 4, 2)),
                           "does not fuse"),
        "custom-module": (lambda: fnn.Sequential(lin(6, 9, 1), Scale(), fnn.ReLU(),
                                                 lin(9, 4, 2)),
                          "Scale"),
        "custom-top-module": (lambda: Wrapper(lin(6, 4, 1)), "Wrapper"),
    }


class Wrapper(fnn.Module):
    """A custom container around a compilable model."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def backward(self, g, input_grad=True):
        return self.inner.backward(g, input_grad=input_grad)


FALLBACKS = ["negative-leaky", "custom-module",
             "custom-top-module", "optimizer-like", "loss-subclass"]


def _fallback_case(case, dt):
    if case == "optimizer-like":
        return (lambda: mlp("relu", dt)), LOSSES["xent-mean"], WrappedSGD, "WrappedSGD"
    if case == "loss-subclass":
        return (lambda: mlp("relu", dt)), MyXent, fnn.SGD, "MyXent"
    build, reason = _fb_models(dt)[case]
    return build, LOSSES["xent-mean"], fnn.SGD, reason


@pytest.mark.parametrize("case", FALLBACKS)
def test_fallback_warns_once_and_trains_like_the_module_path(case, dtype, rng):
    build, make_loss, make_opt, why = _fallback_case(case, dtype)
    model, lf = build(), make_loss()
    opt = make_opt(model.parameters(), **SGDS["all"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        step = fnn.compile_step(model, lf, opt)
    assert [x.category for x in w] == [RuntimeWarning], [str(x.message) for x in w]
    msg = str(w[0].message)
    assert w[0].filename == __file__            # points at the caller of compile_step
    assert step.compiled is False
    assert isinstance(step.reason, str) and step.reason
    assert why in step.reason and step.reason in msg and "module path" in msg
    assert repr(step) == f"CompiledStep(module path: {step.reason})"
    # quiet with warn=False
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        qm = build()
        quiet = fnn.compile_step(qm, make_loss(), make_opt(qm.parameters(), lr=0.1),
                                 warn=False)
    assert not w and quiet.compiled is False and quiet.reason
    # the steps themselves warn no more and equal the module code
    data = batches(rng, BATCHES, 6, 4, dtype, False)
    m2, lf2 = build(), make_loss()
    o2 = make_opt(m2.parameters(), **SGDS["all"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for i, (x, y) in enumerate(data):
            assert step(x, y) == module_step(m2, lf2, o2, x, y), i
            assert_same(model, opt, m2, o2, f"step {i}")
    assert not w, [str(x.message) for x in w]
    assert step.compiled is False


@pytest.mark.parametrize("what", ["mixed-dtypes", "foreign-param", "shape-mismatch"])
def test_fallback_reasons(what):
    if what == "mixed-dtypes":
        model = fnn.Sequential(fnn.Linear(6, 9, rng=1), fnn.ReLU(),
                               fnn.Linear(9, 4, dtype=np.float64, rng=2))
        opt, why = fnn.SGD(model.parameters(), lr=0.1), "mix float32 and float64"
    elif what == "foreign-param":
        model = mlp()
        opt = fnn.SGD(list(model.parameters()) + list(fnn.Linear(2, 2).parameters()), lr=1)
        why = "params[6] is not a parameter of the model"
    else:
        model = fnn.Sequential(fnn.Linear(6, 9, rng=1), fnn.Linear(8, 4, rng=2))
        opt, why = fnn.SGD(model.parameters(), lr=0.1), "follows a layer with 9 outputs"
    with pytest.warns(RuntimeWarning, match="compile_step") as rec:
        step = fnn.compile_step(model, fnn.CrossEntropyLoss(), opt)
    assert len(rec) == 1
    assert step.compiled is False and why in step.reason, step.reason


@pytest.mark.parametrize("bad", ["model", "loss", "optimizer"])
def test_compile_step_argument_types(bad):
    m = mlp()
    args = dict(model=m, loss_fn=fnn.MSELoss(), optimizer=fnn.SGD(m.parameters(), lr=0.1))
    args[{"model": "model", "loss": "loss_fn", "optimizer": "optimizer"}[bad]] = object()
    with pytest.raises(TypeError, match=f"compile_step: {bad if bad != 'loss' else 'loss_fn'}"
                                        f".*object"):
        fnn.compile_step(args["model"], args["loss_fn"], args["optimizer"])


# --------------------------------------------------------------------- 4. input errors
def _err_cases(dt):
    other = np.float64 if np.dtype(dt) == np.float32 else np.float32
    odt, ddt = np.dtype(other).name, np.dtype(dt).name
    x = np.zeros((5, 6), dt)
    y = np.array([0, 1, 2, 3, 0])
    t = np.zeros((5, 4), dt)
    return [
        # (name, loss, x, y, exception, substrings the message must contain)
        ("x-dtype", "xent", x.astype(other), y, TypeError, [odt, ddt]),
        ("x-int", "xent", np.zeros((5, 6), np.int64), y, TypeError, ["int64", ddt]),
        ("x-features", "xent", np.zeros((5, 7), dt), y, ValueError, ["(batch >= 1, 6)",
                                                                     "(5, 7)"]),
        ("x-1d", "xent", np.zeros(6, dt), y, ValueError, ["(batch >= 1, 6)", "(6,)"]),
        ("x-3d", "xent", np.zeros((5, 6, 1), dt), y, ValueError, ["(5, 6, 1)"]),
        ("x-empty", "xent", np.zeros((0, 6), dt), y[:0], ValueError, ["batch >= 1",
                                                                      "(0, 6)"]),
        ("x-list", "xent", x.tolist(), y, TypeError, ["numpy.ndarray", "list"]),
        ("label-high", "xent", x, np.array([0, 1, 4, 3, 0]), ValueError,
         ["[0, 4)", "labels[2] = 4"]),
        ("label-negative", "svm", x, np.array([0, 1, 2, 3, -1]), ValueError,
         ["[0, 4)", "labels[4] = -1"]),
        ("label-float", "xent", x, y.astype(np.float64), TypeError, ["integer", "float64"]),
        ("label-list", "xent", x, y.tolist(), TypeError, ["numpy.ndarray", "list"]),
        ("label-2d", "xent", x, y[:, None], ValueError, ["(5,)", "(5, 1)"]),
        ("label-short", "svm", x, y[:4], ValueError, ["(5,)", "(4,)"]),
        ("mse-shape", "mse", x, np.zeros((5, 3), dt), ValueError, ["(5, 4)", "(5, 3)"]),
        ("mse-rows", "mse", x, np.zeros((4, 4), dt), ValueError, ["(5, 4)", "(4, 4)"]),
        ("mse-1d", "mse", x, np.zeros(5, dt), ValueError, ["(5, 4)", "(5,)"]),
        ("mse-dtype", "mse", x, t.astype(other), TypeError, [ddt, odt]),
        ("mse-labels", "mse", x, y, TypeError, [ddt, "int64"]),
    ]


_ERR_IDS = [c[0] for c in _err_cases(np.float32)]


@pytest.mark.parametrize("case", range(len(_ERR_IDS)), ids=_ERR_IDS)
@pytest.mark.parametrize("after_steps", [0, 2], ids=["fresh", "after-steps"])
def test_step_input_errors_change_nothing(case, after_steps, dtype, rng):
    name, loss, x, y, exc, parts = _err_cases(dtype)[case]
    lf = {"xent": fnn.CrossEntropyLoss, "svm": fnn.SVMLoss, "mse": fnn.MSELoss}[loss]()
    model = mlp("relu", dtype)
    opt = fnn.SGD(model.parameters(), **SGDS["all"])
    step = fnn.compile_step(model, lf, opt)
    for gx, gy in batches(rng, [5] * after_steps, 6, 4, dtype, loss == "mse"):
        step(gx, gy)
    snap = snapshot(model, opt)
    grads = [p.grad.copy() for p in model.parameters()]
    with pytest.raises(exc) as info:
        step(x, y)
    msg = str(info.value)
    assert msg.startswith("compiled step:"), msg
    for part in parts:
        assert part in msg, (part, msg)
    assert_unchanged(model, opt, snap, name)
    for p, g in zip(model.parameters(), grads):
        assert_bitwise_equal(p.grad, g, f"{name}: grad changed")
    assert step.compiled


def _layouts(x):
    f = np.asfortranarray(x)
    t = np.ascontiguousarray(x.T).T
    wide = np.zeros((x.shape[0] * 2, x.shape[1] + 3), x.dtype)
    wide[::2, 1:-2] = x
    raw = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = np.ndarray(x.shape, x.dtype, buffer=raw, offset=1)
    unaligned[...] = x
    rev = np.ascontiguousarray(x[::-1])[::-1]
    return {"fortran": f[:, ::1], "transposed": t, "strided": wide[::2, 1:-2],
            "unaligned": unaligned, "reversed": rev}


@pytest.mark.parametrize("layout", ["fortran", "transposed", "strided", "unaligned",
                                    "reversed"])
@pytest.mark.parametrize("loss", ["xent-mean", "mse-sum"])
def test_step_non_contiguous_inputs(layout, loss, dtype, rng):
    mse = loss.startswith("mse")
    m1, m2 = mlp("relu", dtype), mlp("relu", dtype)
    o1, o2 = fnn.SGD(m1.parameters(), **SGDS["momentum"]), \
        fnn.SGD(m2.parameters(), **SGDS["momentum"])
    s1 = fnn.compile_step(m1, LOSSES[loss](), o1)
    s2 = fnn.compile_step(m2, LOSSES[loss](), o2)
    for x, y in batches(rng, [9, 9, 4], 6, 4, dtype, mse):
        xl = _layouts(x)[layout]
        assert not (xl.flags.c_contiguous and xl.flags.aligned) or layout == "reversed"
        np.testing.assert_array_equal(xl, x)
        yl = _layouts(y)[layout] if mse else \
            {"fortran": y.astype(np.int32), "transposed": y.astype(np.uint8),
             "strided": np.repeat(y, 2)[::2], "unaligned": y.astype(np.int16),
             "reversed": y[::-1].copy()[::-1]}[layout]
        x_before, y_before = xl.copy(), yl.copy()
        assert s1(xl, yl) == s2(x, y)
        assert_same(m1, o1, m2, o2, layout)
        np.testing.assert_array_equal(xl, x_before)       # inputs are not modified
        np.testing.assert_array_equal(yl, y_before)


def test_step_byteswapped_x_is_not_misread(rng):
    m1, m2 = mlp("relu", np.float64), mlp("relu", np.float64)
    s1 = fnn.compile_step(m1, fnn.CrossEntropyLoss(), fnn.SGD(m1.parameters(), lr=0.1))
    s2 = fnn.compile_step(m2, fnn.CrossEntropyLoss(), fnn.SGD(m2.parameters(), lr=0.1))
    x, y = batch(rng, 8, 6, 4, np.float64, False)
    try:
        got = s1(x.astype(">f8"), y)
    except TypeError:
        return                          # rejected like the module path: fine
    assert got == s2(x, y)


def test_step_byteswapped_labels(rng):
    m1, m2 = mlp("relu", np.float64), mlp("relu", np.float64)
    s1 = fnn.compile_step(m1, fnn.CrossEntropyLoss(), fnn.SGD(m1.parameters(), lr=0.1))
    x, y = batch(rng, 8, 6, 4, np.float64, False)
    o2 = fnn.SGD(m2.parameters(), lr=0.1)
    assert s1(x, y.astype(">i8")) == module_step(m2, fnn.CrossEntropyLoss(), o2, x,
                                                 y.astype(">i8"))


# ----------------------------------------------------------------------------- 5. shuffle
def _perm(n, seed, epoch):
    p = np.full(n, -7, np.int64)
    _ks.shuffle(p, seed, epoch)
    return p


def test_shuffle_is_a_reproducible_permutation():
    for n in (2, 3, 10, 257, 1000):
        for seed, epoch in ((0, 0), (1, 0), (0, 1), (123456789, 42), (2**64 - 1, 2**63)):
            p = _perm(n, seed, epoch)
            assert p.dtype == np.int64
            np.testing.assert_array_equal(np.sort(p), np.arange(n))
            np.testing.assert_array_equal(_perm(n, seed, epoch), p)
    base = _perm(1000, 5, 3)
    assert not np.array_equal(base, np.arange(1000))
    others = [_perm(1000, 6, 3), _perm(1000, 5, 4), _perm(1000, 4, 3), _perm(1000, 5, 2),
              _perm(1000, 0, 0)]
    for o in others:
        assert not np.array_equal(o, base)
    # consecutive epochs of one seed are all different
    perms = {tuple(_perm(50, 9, e)) for e in range(20)}
    assert len(perms) == 20


def test_shuffle_small_and_empty():
    _ks.shuffle(np.empty(0, np.int64), 3, 1)
    np.testing.assert_array_equal(_perm(1, 3, 1), [0])
    seen = {tuple(_perm(2, s, 0)) for s in range(40)}
    assert seen == {(0, 1), (1, 0)}


def test_shuffle_is_roughly_uniform():
    """All 6 orders of 3 items appear about equally often over 6000 (seed, epoch) pairs
    (a deterministic check: the draws are fixed by the seeds)."""
    counts = {}
    for s in range(600):
        for e in range(10):
            k = tuple(_perm(3, s, e))
            counts[k] = counts.get(k, 0) + 1
    assert len(counts) == 6
    assert all(800 <= c <= 1200 for c in counts.values()), counts
    # position of each element in a longer permutation: first slot uniform over 0..9
    first = np.bincount([_perm(10, s, 1)[0] for s in range(3000)], minlength=10)
    assert first.min() >= 220 and first.max() <= 380, first


# -------------------------------------------------------- 7. float64 reference, PyTorch
def _ref_train(W1, b1, W2, b2, data, lr, mom, wd, nesterov):
    """NumPy float64: 2-layer ReLU net, mean cross-entropy, torch-style SGD."""
    params = [W1.copy(), b1.copy(), W2.copy(), b2.copy()]
    bufs = [None] * 4
    losses = []
    for x, y in data:
        W1, b1, W2, b2 = params
        h = np.maximum(x @ W1.T + b1, 0)
        s = h @ W2.T + b2
        z = s - s.max(1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(1, keepdims=True))
        n = len(y)
        losses.append(-lp[np.arange(n), y].mean())
        g = np.exp(lp)
        g[np.arange(n), y] -= 1
        g /= n
        gW2, gb2 = g.T @ h, g.sum(0)
        gh = (g @ W2) * (h > 0)
        gW1, gb1 = gh.T @ x, gh.sum(0)
        for i, gr in enumerate((gW1, gb1, gW2, gb2)):
            d = gr + wd * params[i]
            bufs[i] = d.copy() if bufs[i] is None else mom * bufs[i] + d
            d = d + mom * bufs[i] if nesterov else bufs[i]
            params[i] = params[i] - lr * d
    return params, losses


def _parity_setup(rng):
    model = fnn.Sequential(fnn.Linear(5, 16, dtype=np.float64, rng=1), fnn.ReLU(),
                           fnn.Linear(16, 3, dtype=np.float64, rng=2))
    data = [(rng.standard_normal((m, 5)), rng.integers(0, 3, m))
            for m in (12, 12, 7, 30) * 5]
    return model, data


def test_parity_with_float64_reference(rng):
    model, data = _parity_setup(rng)
    init = [p.data.copy() for p in model.parameters()]
    opt = fnn.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True, weight_decay=1e-3)
    step = fnn.compile_step(model, fnn.CrossEntropyLoss(), opt)
    losses = [step(x, y) for x, y in data]
    ref, ref_losses = _ref_train(*init, data, 0.3, 0.9, 1e-3, True)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10, atol=1e-12)
    for p, r in zip(model.parameters(), ref):
        np.testing.assert_allclose(p.data, r, rtol=1e-10, atol=1e-12)
    assert not np.allclose(init[0], ref[0])      # it trained


def test_parity_with_torch(rng):
    torch = pytest.importorskip("torch")
    model, data = _parity_setup(rng)
    tm = torch.nn.Sequential(torch.nn.Linear(5, 16, dtype=torch.float64), torch.nn.ReLU(),
                             torch.nn.Linear(16, 3, dtype=torch.float64))
    with torch.no_grad():
        for tp, p in zip(tm.parameters(), model.parameters()):
            tp.copy_(torch.from_numpy(p.data.copy()))
    kw = dict(lr=0.3, momentum=0.9, nesterov=True, weight_decay=1e-3)
    opt = fnn.SGD(model.parameters(), **kw)
    topt = torch.optim.SGD(tm.parameters(), **kw)
    step = fnn.compile_step(model, fnn.CrossEntropyLoss(), opt)
    tlf = torch.nn.CrossEntropyLoss()
    for x, y in data:
        loss = step(x, y)
        topt.zero_grad()
        tl = tlf(tm(torch.from_numpy(x)), torch.from_numpy(y))
        tl.backward()
        topt.step()
        assert abs(loss - tl.item()) <= 1e-10 * max(1.0, abs(loss))
    for p, tp in zip(model.parameters(), tm.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_step_refuses_a_model_in_eval_mode():
    """As the module path (whose backward needs a training-mode forward), the compiled step
    raises in eval mode and changes nothing; train() makes it work again."""
    rng = np.random.default_rng(0)
    m = fnn.Sequential(fnn.Linear(3, 4, rng=rng), fnn.ReLU(), fnn.Linear(4, 2, rng=rng))
    opt = fnn.SGD(m.parameters(), lr=0.1)
    step = fnn.compile_step(m, fnn.CrossEntropyLoss(), opt)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1])
    before = [p.data.copy() for p in m.parameters()]
    m.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        step(x, y)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, m.parameters()))
    assert opt.steps == 0
    m.train()
    step(x, y)
    assert opt.steps == 1
