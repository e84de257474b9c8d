"""Learning-rate schedules (fastnn.optim.lr_scheduler) against torch.optim.lr_scheduler, and
the Trainer's LRSchedulerCallback.

The lr sequences are compared with ``==``: both libraries compute them in Python floats
(IEEE doubles) by the same formulas in the same order, so they agree to the last bit.  The
one deliberate difference is that fastnn sets a computed lr below 0 as 0.0 (its optimizers
reject a negative lr); torch's values are compared through ``max(v, 0.0)``, and the cases
where torch does go below 0 are asserted to exist.  Tests that need torch skip without it.
"""
import io
import math
import sys
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn.optim import Optimizer
from fastnn._kernels import step as _ks
from fastnn.optim import lr_scheduler as L
from fastnn.training.callbacks import runs_per_batch
from _util import assert_bitwise_equal

N_STEPS = 100


def _torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------------------ helpers
def fast_opt(lr=0.1, momentum=0.9):
    return fnn.SGD([fnn.Parameter(np.zeros(1))], lr=lr, momentum=momentum)


def torch_opt(lr=0.1, momentum=0.9):
    torch = _torch()
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=lr,
                           momentum=momentum)


def _tstep(topt):
    topt.zero_grad()
    topt.param_groups[0]["params"][0].grad = None      # no gradient: a no-op step
    topt.step()


def fast_seq(opt, scheds, n=N_STEPS, metrics=None, also=None):
    """The lr after construction and after each of n (optimizer step, scheduler steps)."""
    lrs, extra = [opt.lr], [also(opt)] if also else []
    for i in range(n):
        opt.step()
        for s in scheds:
            s.step() if metrics is None else s.step(metrics[i])
        lrs.append(opt.lr)
        if also:
            extra.append(also(opt))
        assert scheds[-1].get_last_lr() == [opt.lr]
    return (lrs, extra) if also else lrs


def torch_seq(opt, scheds, n=N_STEPS, metrics=None, also=None):
    g = opt.param_groups[0]
    lrs, extra = [g["lr"]], [also(g)] if also else []
    for i in range(n):
        _tstep(opt)
        for s in scheds:
            s.step() if metrics is None else s.step(metrics[i])
        lrs.append(g["lr"])
        if also:
            extra.append(also(g))
    return (lrs, extra) if also else lrs


def clamp(seq):
    return [max(v, 0.0) for v in seq]


def assert_same(ours, theirs, negatives_ok=False):
    theirs_c = clamp(theirs)
    if theirs_c != theirs:
        assert negatives_ok, "torch went below 0 where no clamp was expected"
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs_c)):
        assert a == b, f"step {i}: fastnn {a!r} != torch {b!r}"
    assert all(type(v) is float for v in ours)


# ------------------------------------------------------- every schedule equals torch's
CASES = [
    ("StepLR", dict(step_size=1)),
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=30)),
    ("StepLR", dict(step_size=9, gamma=1.1)),
    ("MultiStepLR", dict(milestones=[30, 80])),
    ("MultiStepLR", dict(milestones=[10, 30, 30, 70], gamma=0.3)),   # a repeated milestone
    ("MultiStepLR", dict(milestones=[0, 5, 99], gamma=0.5)),
    ("MultiStepLR", dict(milestones=[50, 20], gamma=0.2)),           # any order, as torch
    ("ExponentialLR", dict(gamma=0.9)),
    ("ExponentialLR", dict(gamma=0.97)),
    ("ExponentialLR", dict(gamma=1.0)),
    ("ExponentialLR", dict(gamma=1.01)),
    ("CosineAnnealingLR", dict(T_max=100)),
    ("CosineAnnealingLR", dict(T_max=30, eta_min=1e-3)),             # past T_max: rises
    ("CosineAnnealingLR", dict(T_max=1)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.05)),
    ("LinearLR", dict()),
    ("LinearLR", dict(start_factor=0.1, total_iters=20)),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.0, total_iters=40)),   # linear decay
    ("LinearLR", dict(start_factor=0.25, end_factor=0.5, total_iters=100)),
    ("LinearLR", dict(start_factor=1 / 3, end_factor=0.0, total_iters=59)),  # torch < 0
    ("LinearLR", dict(start_factor=1.0, end_factor=1.0, total_iters=10)),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=100)),
    ("OneCycleLR", dict(max_lr=1.0, epochs=10, steps_per_epoch=10, pct_start=0.25,
                        anneal_strategy="linear")),                  # torch < 0 at the end
    ("OneCycleLR", dict(max_lr=0.2, total_steps=100, three_phase=True)),
    ("OneCycleLR", dict(max_lr=0.3, total_steps=100, three_phase=True,
                        anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0)),
    ("OneCycleLR", dict(max_lr=[0.4], total_steps=120, pct_start=0.0, cycle_momentum=False)),
    ("OneCycleLR", dict(max_lr=0.4, total_steps=101, pct_start=1.0, base_momentum=0.8,
                        max_momentum=0.9)),
]
CASE_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CASES)]


@pytest.mark.parametrize("lr", [0.1, 0.03])
@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_lr_sequence_equals_torch(name, kw, lr):
    torch = _torch()
    o, to = fast_opt(lr), torch_opt(lr)
    s = getattr(L, name)(o, **kw)
    ts = getattr(torch.optim.lr_scheduler, name)(to, **kw)
    assert s.last_epoch == ts.last_epoch == 0
    assert s.base_lrs == ts.base_lrs and o.initial_lr == to.param_groups[0]["initial_lr"]
    assert s.get_last_lr() == ts.get_last_lr()
    mom = (lambda o: o.momentum), (lambda g: g["momentum"])
    ours, om = fast_seq(o, [s], also=mom[0])
    theirs, tm = torch_seq(to, [ts], also=mom[1])
    assert_same(ours, theirs, negatives_ok=(kw.get("end_factor") == 0.0 or
                                            kw.get("anneal_strategy") == "linear"))
    assert om == tm                           # OneCycleLR cycles the momentum, as torch
    assert s.last_epoch == ts.last_epoch == N_STEPS


def test_torch_really_goes_below_zero_where_we_clamp():
    """The clamp cases of CASES are real: torch's own sequence has negative values."""
    torch = _torch()
    for name, kw in (CASES[20], CASES[23]):
        to = torch_opt()
        ts = getattr(torch.optim.lr_scheduler, name)(to, **kw)
        assert min(torch_seq(to, [ts])) < 0


def test_one_cycle_momentum_sequence_equals_torch():
    """cycle_momentum on SGD: momentum goes max -> base at the peak -> max, as torch's."""
    torch = _torch()
    o, to = fast_opt(momentum=0.0), torch_opt(momentum=0.0)
    kw = dict(max_lr=0.5, total_steps=100, base_momentum=0.8, max_momentum=0.97)
    s, ts = L.OneCycleLR(o, **kw), torch.optim.lr_scheduler.OneCycleLR(to, **kw)
    assert o.momentum == 0.97
    ours, om = fast_seq(o, [s], also=lambda o: o.momentum)
    theirs, tm = torch_seq(to, [ts], also=lambda g: g["momentum"])
    assert_same(ours, theirs)
    assert om == tm and min(om) == 0.8 and om[0] == 0.97


class BetasOpt(Optimizer):
    """A stand-in for an optimizer with Adam's betas (OneCycleLR cycles beta1)."""

    def __init__(self, params, lr, betas=(0.9, 0.999)):
        super().__init__(params)
        self.lr, self.betas = lr, tuple(betas)

    def step(self):
        self._count_steps(1)


class LrOnly(Optimizer):
    def __init__(self, params, lr):
        super().__init__(params)
        self.lr = lr

    def step(self):
        self._count_steps(1)


def test_one_cycle_cycles_beta1_like_torch_adam():
    torch = _torch()
    o = BetasOpt([fnn.Parameter(np.zeros(1))], lr=1e-3, betas=(0.9, 0.995))
    to = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, betas=(0.9, 0.995))
    kw = dict(max_lr=0.01, total_steps=100, three_phase=True)
    s, ts = L.OneCycleLR(o, **kw), torch.optim.lr_scheduler.OneCycleLR(to, **kw)
    assert o.betas == to.param_groups[0]["betas"] == (0.95, 0.995)
    ours, ob = fast_seq(o, [s], also=lambda o: o.betas)
    theirs, tb = torch_seq(to, [ts], also=lambda g: g["betas"])
    assert ours == theirs and ob == tb


def test_one_cycle_without_momentum_or_betas():
    o = LrOnly([fnn.Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"OneCycleLR: cycle_momentum=True needs an optimizer "
                                         r"with a momentum.*LrOnly has neither"):
        L.OneCycleLR(o, max_lr=0.1, total_steps=10)
    s = L.OneCycleLR(o, max_lr=0.1, total_steps=10, cycle_momentum=False)
    assert s.get_last_lr() == [o.lr] and math.isclose(o.lr, 0.1 / 25, rel_tol=1e-15)


def test_one_cycle_phase_of_no_length():
    """pct_start * total_steps == 1: the warm-up ends at step 0 (torch divides by zero)."""
    o = fast_opt()
    s = L.OneCycleLR(o, max_lr=0.5, total_steps=10, pct_start=0.1)
    assert o.lr == 0.5 and o.momentum == 0.85
    lrs = fast_seq(o, [s], n=9)
    assert lrs[-1] == 0.5 / 25 / 1e4 and all(a > b for a, b in zip(lrs, lrs[1:]))
    # pct_start=1: the step after the last (torch: ZeroDivisionError) keeps the end value
    o = fast_opt()
    s = L.OneCycleLR(o, max_lr=0.5, total_steps=10, pct_start=1.0)
    lrs = fast_seq(o, [s], n=10)
    assert lrs[-2] == 0.5 and lrs[-1] == 0.5 / 25 / 1e4
    try:
        torch = __import__("torch")
    except ImportError:
        return
    with pytest.raises(ZeroDivisionError):
        torch.optim.lr_scheduler.OneCycleLR(torch_opt(), max_lr=0.5, total_steps=10,
                                            pct_start=0.1)


def test_one_cycle_past_total_steps_raises():
    o = fast_opt()
    s = L.OneCycleLR(o, max_lr=0.1, total_steps=5)
    for _ in range(5):
        o.step()
        s.step()
    with pytest.raises(ValueError, match=r"OneCycleLR: tried to step 6 times; the schedule "
                                         r"has total_steps=5"):
        s.step()


# ------------------------------------------------------------------- ReduceLROnPlateau
def _metrics(seed, mode):
    """A noisy, quantized curve with plateaus and repeated values (threshold edges)."""
    rs = np.random.RandomState(seed)
    trend = np.concatenate([np.linspace(2, 1, 30), np.full(30, 1.0), np.linspace(1, 0.5, 20),
                            np.full(20, 0.5)])
    m = np.round(trend + rs.randn(100) * 0.05, 2)
    m[40:50] = m[39]                               # exact repeats
    return [float(v) for v in (m if mode == "min" else 3 - m)]


PLATEAU = [
    dict(),
    dict(mode="max"),
    dict(patience=0, factor=0.5),
    dict(patience=2, factor=0.5, threshold=0.01, threshold_mode="abs"),
    dict(mode="max", patience=3, threshold=0.02, threshold_mode="abs", cooldown=2),
    dict(patience=1, factor=0.3, cooldown=3, min_lr=0.004),
    dict(mode="max", patience=0, factor=0.5, threshold=0.0, min_lr=[1e-3]),
    dict(patience=0, factor=0.7, eps=0.01),                  # reductions < eps are skipped
    dict(patience=1, factor=0.0, cooldown=1),
    dict(mode="max", threshold=0.05, patience=4),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kw", PLATEAU, ids=[str(i) for i in range(len(PLATEAU))])
def test_reduce_lr_on_plateau_equals_torch(kw, seed):
    torch = _torch()
    metrics = _metrics(seed, kw.get("mode", "min"))
    o, to = fast_opt(), torch_opt()
    s = L.ReduceLROnPlateau(o, **kw)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(to, **kw)
    state = lambda s: (s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch,
                       s.in_cooldown, s.get_last_lr())
    assert state(s) == state(ts)
    for i, m in enumerate(metrics):
        o.step()
        _tstep(to)
        s.step(m)
        ts.step(m)
        assert o.lr == to.param_groups[0]["lr"], i
        assert state(s) == state(ts), i
    assert o.lr < 0.1                               # the scripts do reduce


def test_reduce_lr_on_plateau_hand_checked():
    o = fast_opt(lr=1.0)
    s = L.ReduceLROnPlateau(o, patience=1, factor=0.5, cooldown=1, threshold=0.0,
                            min_lr=0.2, eps=0.0)
    lrs = []
    for m in [5, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3]:
        o.step()
        s.step(np.float64(m))
        lrs.append(o.lr)
    # bad epochs: 4@2 (1), 4@3 (2 > 1: halve, cooldown 1), 4@4 (cooldown), 4@5 (1),
    # 4@6 (2: halve), 4@7 cooldown, 3 improves, ...
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2]
    assert s.best == 3 and s.last_epoch == 11


def test_reduce_lr_on_plateau_metric_types():
    s = L.ReduceLROnPlateau(fast_opt())
    s.step(np.array(0.5))
    s.step(np.float32(0.25))
    assert s.best == 0.25
    s.step(float("nan"))                            # never an improvement (as torch)
    assert s.num_bad_epochs == 1
    for bad in ("0.1", None, [0.1, 0.2]):
        with pytest.raises(TypeError, match="ReduceLROnPlateau.step: metrics must be a "
                                            "number"):
            s.step(bad)


# ------------------------------------------------------------------------- SequentialLR
def _seq_cases():
    return [
        ("warmup-cosine", lambda m, o: [m.LinearLR(o, start_factor=0.1, total_iters=10),
                                        m.CosineAnnealingLR(o, T_max=90)], [10]),
        ("exp-step", lambda m, o: [m.ExponentialLR(o, gamma=0.9),
                                   m.StepLR(o, step_size=5, gamma=0.5)], [20]),
        ("three", lambda m, o: [m.LinearLR(o, start_factor=0.5, total_iters=5),
                                m.StepLR(o, step_size=10, gamma=0.5),
                                m.ExponentialLR(o, gamma=0.95)], [5, 40]),
        ("milestone-0", lambda m, o: [m.LinearLR(o, start_factor=0.2, total_iters=4),
                                      m.MultiStepLR(o, milestones=[3, 50], gamma=0.5)], [0]),
        ("milestone-1", lambda m, o: [m.ExponentialLR(o, gamma=0.5),
                                      m.CosineAnnealingLR(o, T_max=20, eta_min=0.01)], [1]),
        ("one-cycle-then-exp", lambda m, o: [m.OneCycleLR(o, max_lr=0.5, total_steps=60),
                                             m.ExponentialLR(o, gamma=0.97)], [60]),
        ("single", lambda m, o: [m.StepLR(o, step_size=3)], []),
    ]


@pytest.mark.parametrize("case", _seq_cases(), ids=lambda c: c[0])
def test_sequential_lr_equals_torch(case):
    torch = _torch()
    _, make, milestones = case
    o, to = fast_opt(), torch_opt()
    s = L.SequentialLR(o, make(L, o), milestones)
    ts = torch.optim.lr_scheduler.SequentialLR(to, make(torch.optim.lr_scheduler, to),
                                               milestones)
    assert s.last_epoch == ts.last_epoch and s.get_last_lr() == ts.get_last_lr()
    ours, theirs = fast_seq(o, [s]), torch_seq(to, [ts])
    assert_same(ours, theirs)
    assert [x.last_epoch for x in s._schedulers] == [x.last_epoch for x in ts._schedulers]


@pytest.mark.filterwarnings("ignore:.*before .?optimizer.step")   # both warn, as torch
def test_nested_sequential_lr_equals_torch():
    torch = _torch()

    def make(m, o):
        inner = m.SequentialLR(o, [m.LinearLR(o, start_factor=0.5, total_iters=3),
                                   m.ExponentialLR(o, gamma=0.9)], milestones=[3])
        return m.SequentialLR(o, [inner, m.StepLR(o, step_size=7, gamma=0.5)], [30])

    o, to = fast_opt(), torch_opt()
    s, ts = make(L, o), make(torch.optim.lr_scheduler, to)
    assert_same(fast_seq(o, [s]), torch_seq(to, [ts]))


# -------------------------------------------------------------- chaining, resuming
CHAINS = [
    ("warmup+exp", lambda m, o: [m.LinearLR(o, start_factor=0.2, total_iters=5),
                                 m.ExponentialLR(o, gamma=0.95)]),
    ("multistep+cosine", lambda m, o: [m.MultiStepLR(o, milestones=[20, 50], gamma=0.5),
                                       m.CosineAnnealingLR(o, T_max=100)]),
    ("step+exp", lambda m, o: [m.StepLR(o, step_size=10), m.ExponentialLR(o, gamma=0.98)]),
    ("cosine+linear", lambda m, o: [m.CosineAnnealingLR(o, T_max=25, eta_min=0.01),
                                    m.LinearLR(o, start_factor=1.0, end_factor=0.5,
                                               total_iters=50)]),
]


@pytest.mark.parametrize("case", CHAINS, ids=lambda c: c[0])
def test_two_schedulers_on_one_optimizer_chain_as_in_torch(case):
    torch = _torch()
    o, to = fast_opt(), torch_opt()
    s, ts = case[1](L, o), case[1](torch.optim.lr_scheduler, to)
    assert s[1].base_lrs == ts[1].base_lrs == [0.1]     # initial_lr is set once
    assert_same(fast_seq(o, s), torch_seq(to, ts))


@pytest.mark.parametrize("name,kw", [("StepLR", dict(step_size=7, gamma=0.5)),
                                     ("ExponentialLR", dict(gamma=0.9)),
                                     ("CosineAnnealingLR", dict(T_max=30)),
                                     ("LinearLR", dict(start_factor=0.2, total_iters=40))])
def test_resume_with_last_epoch_equals_torch(name, kw):
    torch = _torch()
    o, to = fast_opt(lr=0.07), torch_opt(lr=0.07)
    with pytest.raises(KeyError, match=rf"{name}: last_epoch=20 resumes a schedule, but the "
                                       "optimizer has no initial_lr"):
        getattr(L, name)(o, last_epoch=20, **kw)
    o.initial_lr = to.param_groups[0]["initial_lr"] = 0.1
    s = getattr(L, name)(o, last_epoch=20, **kw)
    ts = getattr(torch.optim.lr_scheduler, name)(to, last_epoch=20, **kw)
    assert s.last_epoch == ts.last_epoch == 21
    assert_same(fast_seq(o, [s]), torch_seq(to, [ts]))


# --------------------------------------------------------------------- state_dict
def _all_makers():
    makers = [(f"{n}-{i}", (lambda n, kw: lambda o: getattr(L, n)(o, **kw))(n, kw))
              for i, (n, kw) in enumerate(CASES)]
    makers += [(f"Sequential-{c[0]}", (lambda c: lambda o: L.SequentialLR(o, c[1](L, o),
                                                                          c[2]))(c))
               for c in _seq_cases()]
    return makers


@pytest.mark.parametrize("maker", _all_makers(), ids=lambda m: m[0])
def test_state_dict_round_trip_mid_schedule(maker):
    make = maker[1]
    o = fast_opt()
    s = make(o)
    full, mom = fast_seq(o, [s], also=lambda o: o.momentum)
    # the same run, interrupted at step 37 and resumed into a fresh optimizer + scheduler
    o1 = fast_opt()
    s1 = make(o1)
    first = fast_seq(o1, [s1], n=37)
    sd, osd = s1.state_dict(), o1.state_dict()
    assert "optimizer" not in sd and sd["last_epoch"] == 37
    o2 = fast_opt(lr=0.5, momentum=0.5)
    o2.lr = 0.1
    s2 = make(o2)
    o2.load_state_dict(osd)
    s2.load_state_dict(sd)
    assert s2.get_last_lr() == s1.get_last_lr() == [o2.lr]
    rest, rmom = fast_seq(o2, [s2], n=N_STEPS - 37, also=lambda o: o.momentum)
    assert first + rest[1:] == full
    assert rmom == mom[37:]
    # the state is a copy
    sd["last_epoch"] = 0
    sd["base_lrs"].append(1.0)
    assert s1.last_epoch == 37 and len(s1.base_lrs) == 1


def test_reduce_lr_on_plateau_state_dict_round_trip():
    metrics = _metrics(0, "min")
    kw = dict(patience=2, factor=0.5, cooldown=1)
    o = fast_opt()
    s = L.ReduceLROnPlateau(o, **kw)
    full = fast_seq(o, [s], metrics=metrics)
    o1 = fast_opt()
    s1 = L.ReduceLROnPlateau(o1, **kw)
    first = fast_seq(o1, [s1], n=45, metrics=metrics)
    sd, osd = s1.state_dict(), o1.state_dict()
    o2 = fast_opt()
    s2 = L.ReduceLROnPlateau(o2, mode="max")       # load_state_dict restores the mode
    o2.load_state_dict(osd)
    s2.load_state_dict(sd)
    assert s2.mode == "min" and s2.mode_worse == math.inf
    rest = fast_seq(o2, [s2], n=55, metrics=metrics[45:])
    assert first + rest[1:] == full


def test_load_state_dict_of_another_kind_is_refused():
    o = fast_opt()
    step, exp = L.StepLR(o, step_size=3), L.ExponentialLR(fast_opt(), gamma=0.9)
    before = step.state_dict()
    with pytest.raises(KeyError, match=r"StepLR.load_state_dict: not a state_dict of this "
                                       r"scheduler: missing keys \['gamma', 'step_size'\], "
                                       r"unexpected keys \['gamma'\]|missing keys "
                                       r"\['step_size'\]"):
        step.load_state_dict(exp.state_dict())
    with pytest.raises(TypeError, match="StepLR.load_state_dict: expected a dict"):
        step.load_state_dict([1, 2])
    assert step.state_dict() == before
    seq = L.SequentialLR(o, [L.StepLR(o, step_size=3), L.ExponentialLR(o, gamma=0.9)], [5])
    sd = seq.state_dict()
    sd["_schedulers"][1] = {"bad": 1}
    with pytest.raises(KeyError, match=r"SequentialLR.load_state_dict \(ExponentialLR\)"):
        seq.load_state_dict(sd)
    assert seq.state_dict()["_schedulers"][1]["gamma"] == 0.9


# ---------------------------------------------------------------------- warnings, API
def test_step_before_optimizer_step_warns_as_torch():
    o = fast_opt()
    s = L.StepLR(o, step_size=2)
    with pytest.warns(UserWarning, match=r"StepLR.step\(\) was called before "
                                         r"optimizer.step\(\)"):
        s.step()
    o2 = fast_opt()
    s2 = L.StepLR(o2, step_size=2)
    o2.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s2.step()
        s2.step()


def test_get_lr_outside_step_warns_and_get_last_lr_is_a_copy():
    o = fast_opt()
    s = L.ExponentialLR(o, gamma=0.5)
    with pytest.warns(UserWarning, match="get_last_lr"):
        s.get_lr()
    last = s.get_last_lr()
    last[0] = 7.0
    assert s.get_last_lr() == [0.1]
    assert "ExponentialLR(last_epoch=0, lr=0.1)" == repr(s)


def test_custom_subclass_with_get_lr():
    class Halve(L.LRScheduler):
        def get_lr(self):
            return [self.base_lrs[0] * 0.5 ** self.last_epoch]

    o = fast_opt()
    s = Halve(o)
    o.step()
    s.step()
    s.step()
    assert o.lr == 0.1 * 0.25 and s.get_last_lr() == [o.lr]

    class Two(L.LRScheduler):
        def get_lr(self):
            return [0.1, 0.2]

    with pytest.raises(ValueError, match="Two.get_lr must return a list of one learning "
                                         "rate, got 2"):
        Two(fast_opt())


def test_exports():
    assert fnn.optim.lr_scheduler is L
    for name in ("LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR",
                 "CosineAnnealingLR", "LinearLR", "OneCycleLR", "ReduceLROnPlateau",
                 "SequentialLR"):
        assert name in L.__all__ and hasattr(L, name)
    assert fnn.LRSchedulerCallback is fnn.training.LRSchedulerCallback


# -------------------------------------------------------------------- argument errors
def _errors():
    o = fast_opt()
    other = fast_opt()
    step_o = L.StepLR(o, step_size=2)
    return [
        (lambda: L.StepLR(o.params, 3), TypeError,
         r"StepLR: optimizer must be a fastnn Optimizer \(e.g. fastnn.SGD\), got list"),
        (lambda: L.StepLR(o, 0), ValueError, r"StepLR: step_size must be an int >= 1, got 0"),
        (lambda: L.StepLR(o, 2.0), ValueError, r"StepLR: step_size must be an int >= 1, "
                                               r"got 2.0"),
        (lambda: L.StepLR(o, 2, gamma=-0.1), ValueError,
         r"StepLR: gamma must be finite and >= 0.0, got -0.1"),
        (lambda: L.StepLR(o, 2, gamma="0.1"), TypeError,
         r"StepLR: gamma must be a real number, got '0.1'"),
        (lambda: L.StepLR(o, 2, last_epoch=-2), ValueError,
         r"StepLR: last_epoch must be an int >= -1, got -2"),
        (lambda: L.MultiStepLR(o, 30), TypeError,
         r"MultiStepLR: milestones must be a list of epoch numbers \(ints >= 0\), got int"),
        (lambda: L.MultiStepLR(o, [10, -1]), ValueError,
         r"MultiStepLR: milestones\[1\] must be an int >= 0, got -1"),
        (lambda: L.ExponentialLR(o, gamma=math.inf), ValueError,
         r"ExponentialLR: gamma must be finite and >= 0.0, got inf"),
        (lambda: L.CosineAnnealingLR(o, T_max=0), ValueError,
         r"CosineAnnealingLR: T_max must be an int >= 1, got 0"),
        (lambda: L.CosineAnnealingLR(o, T_max=10, eta_min=-1), ValueError,
         r"CosineAnnealingLR: eta_min must be finite and >= 0.0, got -1"),
        (lambda: L.LinearLR(o, start_factor=0), ValueError,
         r"LinearLR: start_factor must be in \(0, 1\], got 0"),
        (lambda: L.LinearLR(o, start_factor=1.5), ValueError,
         r"LinearLR: start_factor must be in \(0, 1\], got 1.5"),
        (lambda: L.LinearLR(o, end_factor=float("nan")), ValueError,
         r"LinearLR: end_factor must be in \[0, 1\], got nan"),
        (lambda: L.LinearLR(o, total_iters=0), ValueError,
         r"LinearLR: total_iters must be an int >= 1, got 0"),
        (lambda: L.OneCycleLR(o, max_lr=0.1), ValueError,
         r"OneCycleLR: give total_steps, or both epochs and steps_per_epoch \(got "
         r"total_steps=None, epochs=None, steps_per_epoch=None\)"),
        (lambda: L.OneCycleLR(o, max_lr=0.1, epochs=3), ValueError,
         r"OneCycleLR: give total_steps, or both epochs and steps_per_epoch"),
        (lambda: L.OneCycleLR(o, max_lr=0.1, total_steps=0), ValueError,
         r"OneCycleLR: total_steps must be an int >= 1, got 0"),
        (lambda: L.OneCycleLR(o, max_lr=0.1, epochs=2, steps_per_epoch=1.5), ValueError,
         r"OneCycleLR: steps_per_epoch must be an int >= 1, got 1.5"),
        (lambda: L.OneCycleLR(o, max_lr=0, total_steps=5), ValueError,
         r"OneCycleLR: max_lr must be > 0, got 0"),
        (lambda: L.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=5), ValueError,
         r"OneCycleLR: max_lr must be a number or a list of one \(a fastnn optimizer has "
         r"one parameter group\), got 2 values"),
        (lambda: L.OneCycleLR(o, max_lr=0.1, total_steps=5, pct_start=1.2), ValueError,
         r"OneCycleLR: pct_start must be in \[0, 1\], got 1.2"),
        (lambda: L.OneCycleLR(o, max_lr=0.1, total_steps=5, anneal_strategy="cosine"),
         ValueError, r"OneCycleLR: anneal_strategy must be one of 'cos', 'linear', got "
                     r"'cosine'"),
        (lambda: L.OneCycleLR(o, max_lr=0.1, total_steps=5, div_factor=0), ValueError,
         r"OneCycleLR: div_factor must be > 0, got 0"),
        (lambda: L.OneCycleLR(o, max_lr=0.1, total_steps=5, base_momentum=-0.5), ValueError,
         r"OneCycleLR: base_momentum must be finite and >= 0.0, got -0.5"),
        (lambda: L.ReduceLROnPlateau(o, factor=1.0), ValueError,
         r"ReduceLROnPlateau: factor must be in \[0, 1\), got 1.0"),
        (lambda: L.ReduceLROnPlateau(o, mode="minimum"), ValueError,
         r"ReduceLROnPlateau: mode must be one of 'min', 'max', got 'minimum'"),
        (lambda: L.ReduceLROnPlateau(o, threshold_mode="relative"), ValueError,
         r"ReduceLROnPlateau: threshold_mode must be one of 'rel', 'abs', got 'relative'"),
        (lambda: L.ReduceLROnPlateau(o, patience=-1), ValueError,
         r"ReduceLROnPlateau: patience must be an int >= 0, got -1"),
        (lambda: L.ReduceLROnPlateau(o, cooldown=1.5), ValueError,
         r"ReduceLROnPlateau: cooldown must be an int >= 0, got 1.5"),
        (lambda: L.ReduceLROnPlateau(o, min_lr=-1e-3), ValueError,
         r"ReduceLROnPlateau: min_lr must be finite and >= 0.0, got -0.001"),
        (lambda: L.ReduceLROnPlateau(o, eps=-1), ValueError,
         r"ReduceLROnPlateau: eps must be finite and >= 0.0, got -1"),
        (lambda: L.ReduceLROnPlateau(None), TypeError,
         r"ReduceLROnPlateau: optimizer must be a fastnn Optimizer"),
        (lambda: L.SequentialLR(o, [], []), ValueError,
         r"SequentialLR: expects at least one scheduler, got none"),
        (lambda: L.SequentialLR(o, [step_o, L.ReduceLROnPlateau(o)], [3]), ValueError,
         r"SequentialLR: schedulers\[1\] is a ReduceLROnPlateau, which cannot be sequenced"),
        (lambda: L.SequentialLR(o, [step_o, L.StepLR(other, 2)], [3]), ValueError,
         r"SequentialLR: schedulers\[1\] \(StepLR\) schedules another optimizer"),
        (lambda: L.SequentialLR(o, [step_o, "x"], [3]), TypeError,
         r"SequentialLR: schedulers\[1\] must be a fastnn LRScheduler, got str"),
        (lambda: L.SequentialLR(o, [step_o, L.StepLR(o, 2)], [3, 4]), ValueError,
         r"SequentialLR: expects one milestone fewer than schedulers, got 2 schedulers and "
         r"2 milestones"),
        (lambda: L.SequentialLR(o, [step_o, L.StepLR(o, 2), L.StepLR(o, 3)], [5, 5]),
         ValueError, r"SequentialLR: milestones must be increasing, got \[5, 5\]"),
        (lambda: L.SequentialLR(o, [step_o, L.StepLR(o, 2)], [-3]), ValueError,
         r"SequentialLR: milestones\[0\] must be an int >= 0, got -3"),
        (lambda: L.StepLR(LrOnlyNoLr(), 2), TypeError,
         r"StepLR: optimizer LrOnlyNoLr has no lr attribute to schedule"),
    ]


class LrOnlyNoLr(Optimizer):
    def __init__(self):
        super().__init__([fnn.Parameter(np.zeros(1))])


@pytest.mark.parametrize("i", range(len(_errors())))
def test_argument_errors(i):
    fn, exc, msg = _errors()[i]
    with pytest.raises(exc, match=msg):
        fn()


# ------------------------------------------------------------------------ the Trainer
def blobs(n=250, seed=0):
    rs = np.random.RandomState(seed)
    y = rs.randint(0, 3, n)
    X = rs.randn(n, 2) * 0.7 + np.array([[0, 0], [2, 1], [-1, 2]])[y]
    return X, y.astype(np.int64)


X_TR, Y_TR = blobs()
X_VA, Y_VA = blobs(90, seed=1)


def net(dtype=np.float32, seed=0):
    return fnn.Sequential(fnn.Linear(2, 24, dtype=dtype, rng=seed), fnn.ReLU(),
                          fnn.Linear(24, 3, dtype=dtype, rng=seed + 1))


def fit(make_sched, *, compiled=True, dtype=np.float32, epochs=4, bs=32, interval="epoch",
        val=False, monitor=None, extra=(), lr=0.1, momentum=0.9, progress=False):
    model = net(dtype)
    opt = fnn.SGD(model.parameters(), lr=lr, momentum=momentum)
    sched = make_sched(opt)
    cb = fnn.LRSchedulerCallback(sched, interval=interval, monitor=monitor)
    tr = fnn.Trainer(model, fnn.CrossEntropyLoss(), opt, batch_size=bs, epochs=epochs,
                     seed=5, progress=progress, compiled=compiled)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = tr.fit(X_TR, Y_TR, validation_data=(X_VA, Y_VA) if val else None,
                   callbacks=[cb, *extra])
    return tr, sched, h


def test_trainer_per_epoch_schedule():
    tr, s, h = fit(lambda o: L.StepLR(o, step_size=2, gamma=0.5), epochs=5)
    assert h["lr"] == [0.1, 0.1, 0.05, 0.05, 0.025]      # the lr each epoch ran with
    assert s.last_epoch == 5 and tr.optimizer.lr == 0.025


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_trainer_schedule_equals_hand_written_loop(interval):
    """fit with the callback == the module-path loop with scheduler.step() by hand."""
    steps = -(-len(X_TR) // 32)
    make = ((lambda o: L.CosineAnnealingLR(o, T_max=3, eta_min=0.01)) if interval == "epoch"
            else (lambda o: L.OneCycleLR(o, max_lr=0.5, epochs=3, steps_per_epoch=steps)))
    tr, s, h = fit(make, epochs=3, interval=interval)
    model = net()
    opt = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    s2 = make(opt)
    lf = fnn.CrossEntropyLoss()
    X = X_TR.astype(np.float32)
    perm = np.empty(len(X_TR), np.int64)
    lrs = []
    for e in range(3):
        _ks.shuffle(perm, 5, e)
        lrs.append(opt.lr)
        for b in range(steps):
            idx = perm[b * 32:(b + 1) * 32]
            model.zero_grad()
            lf(model(X[idx]), Y_TR[idx])
            model.backward(lf.backward(), input_grad=False)
            opt.step()
            if interval == "step":
                s2.step()
        if interval == "epoch":
            s2.step()
    for a, b in zip(tr.model.parameters(), model.parameters()):
        assert_bitwise_equal(a.data, b.data)
    assert h["lr"] == lrs and s.get_last_lr() == s2.get_last_lr()
    assert tr.optimizer.momentum == opt.momentum


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "module"])
def test_trainer_plateau_monitor(compiled):
    kw = dict(compiled=compiled, epochs=4)
    # default monitor: val_loss with validation data, else loss
    _, s, h = fit(lambda o: L.ReduceLROnPlateau(o, patience=0, threshold=0.0), val=True,
                  **kw)
    assert s.best == min(h["val_loss"]) and s.last_epoch == 4
    _, s, h = fit(lambda o: L.ReduceLROnPlateau(o, patience=0, threshold=0.0), **kw)
    assert s.best == min(h["loss"])
    _, s, h = fit(lambda o: L.ReduceLROnPlateau(o, mode="max", threshold=0.0),
                  monitor="accuracy", **kw)
    assert s.best == max(h["accuracy"])
    # a reduction shows in the next epoch's lr
    _, s, h = fit(lambda o: L.ReduceLROnPlateau(o, mode="max", patience=0, factor=0.5),
                  monitor="loss", **kw)
    # the loss falls, which in "max" mode never improves on epoch 1's: halved from epoch 2 on
    assert h["lr"] == [0.1, 0.1, 0.05, 0.025]
    with pytest.raises(KeyError, match=r"LRSchedulerCallback: monitored metric 'val_acc' is "
                                       r"not in the epoch logs"):
        fit(lambda o: L.ReduceLROnPlateau(o), monitor="val_acc", **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_trainer_per_step_one_cycle_compiled_equals_module_bitwise(dtype, monkeypatch):
    """Compiled epochs (with and without a progress bar, which also runs one step per call)
    and the module path, bitwise, with the lr and the momentum changing every step."""
    steps = -(-len(X_TR) // 32)
    runs = []
    for mode in ("compiled", "module", "compiled-progress"):
        if mode == "compiled-progress":
            class TTY(io.StringIO):
                def isatty(self):
                    return True
            fake = TTY()
            monkeypatch.setattr(sys, "stderr", fake)
        tr, s, h = fit(lambda o: L.OneCycleLR(o, max_lr=0.8, epochs=3, steps_per_epoch=steps),
                       compiled=mode != "module", dtype=dtype, epochs=3, interval="step",
                       val=True, progress=mode == "compiled-progress")
        if mode != "module":
            assert tr._step is not None and tr._step.compiled
        runs.append((tr, s, h))
    assert "epoch 3" in fake.getvalue()
    c = runs.pop()
    for pa, pc in zip(runs[0][0].model.parameters(), c[0].model.parameters()):
        assert_bitwise_equal(pa.data, pc.data)
    assert c[2]["lr"] == runs[0][2]["lr"] and c[2]["loss"] == runs[0][2]["loss"]
    (a, sa, ha), (b, sb, hb) = runs
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert_bitwise_equal(pa.data, pb.data)
    for ma, mb in zip(a.optimizer.state_dict()["momentum_buffers"],
                      b.optimizer.state_dict()["momentum_buffers"]):
        assert_bitwise_equal(ma, mb)
    for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert ha[k] == hb[k], k
    assert sa.last_epoch == sb.last_epoch == 3 * steps == a.optimizer.steps
    assert a.optimizer.momentum == b.optimizer.momentum
    # the lr of each epoch's first step, from the schedule itself
    o = fast_opt()
    ref = L.OneCycleLR(o, max_lr=0.8, epochs=3, steps_per_epoch=steps)
    seq = fast_seq(o, [ref], n=3 * steps)
    assert ha["lr"] == [seq[0], seq[steps], seq[2 * steps]]
    assert a.optimizer.lr == seq[-1]


def test_compiled_epochs_run_whole_unless_a_hook_needs_each_step(monkeypatch):
    calls = []
    orig = fnn.CompiledStep.run_batches

    def counting(self, X, Y, perm, first, n_steps, *a):
        calls.append(n_steps)
        return orig(self, X, Y, perm, first, n_steps, *a)

    monkeypatch.setattr(fnn.CompiledStep, "run_batches", counting)
    steps = -(-len(X_TR) // 32)
    fit(lambda o: L.StepLR(o, step_size=1), epochs=2)
    assert calls == [steps, steps]                        # one call per epoch
    calls.clear()
    fit(lambda o: L.LinearLR(o, start_factor=0.1, total_iters=steps), epochs=2,
        interval="step")
    assert calls == [1] * (2 * steps)                     # one call per step

    class Seen(fnn.Callback):
        def __init__(self):
            self.seen = []

        def on_batch_end(self, trainer, step):
            self.seen.append((trainer.epoch, step, trainer.optimizer.steps))

    calls.clear()
    seen = Seen()
    fit(lambda o: L.StepLR(o, step_size=1), epochs=2, extra=[seen])
    assert calls == [1] * (2 * steps)
    assert seen.seen == [(e, k, e * steps + k) for e in range(2) for k in range(1, steps + 1)]


def test_runs_per_batch():
    o = fast_opt()
    assert not runs_per_batch(fnn.LRSchedulerCallback(L.StepLR(o, 2)))
    assert runs_per_batch(fnn.LRSchedulerCallback(L.StepLR(o, 2), interval="step"))
    assert not runs_per_batch(fnn.EarlyStopping()) and not runs_per_batch(fnn.Callback())

    class Hook(fnn.Callback):
        def on_batch_end(self, trainer, step):
            pass

    assert runs_per_batch(Hook())


def test_callback_errors():
    o = fast_opt()
    with pytest.raises(TypeError, match=r"LRSchedulerCallback: scheduler must be a "
                                        r"fastnn.optim.lr_scheduler scheduler, got SGD"):
        fnn.LRSchedulerCallback(o)
    with pytest.raises(ValueError, match=r"LRSchedulerCallback: interval must be 'epoch' or "
                                         r"'step', got 'batch'"):
        fnn.LRSchedulerCallback(L.StepLR(o, 2), interval="batch")
    with pytest.raises(ValueError, match=r"LRSchedulerCallback: ReduceLROnPlateau steps on "
                                         r"an epoch metric; use interval='epoch'"):
        fnn.LRSchedulerCallback(L.ReduceLROnPlateau(o), interval="step")
    with pytest.raises(ValueError, match=r"LRSchedulerCallback: monitor is only used with "
                                         r"ReduceLROnPlateau, got monitor='loss' for a "
                                         r"StepLR"):
        fnn.LRSchedulerCallback(L.StepLR(o, 2), monitor="loss")
    with pytest.raises(TypeError, match=r"LRSchedulerCallback: monitor must be a key of the "
                                        r"epoch logs \(a str\), got int"):
        fnn.LRSchedulerCallback(L.ReduceLROnPlateau(o), monitor=3)
    model = net()
    tr = fnn.Trainer(model, fnn.CrossEntropyLoss(), fnn.SGD(model.parameters(), lr=0.1),
                     epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"LRSchedulerCallback: the scheduler schedules "
                                         r"another optimizer than the Trainer's"):
        tr.fit(X_TR, Y_TR, callbacks=[fnn.LRSchedulerCallback(L.StepLR(o, 2))])
