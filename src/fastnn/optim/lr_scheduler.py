"""Learning-rate schedules, as torch.optim.lr_scheduler: the same names, arguments, state and
arithmetic, so a schedule gives exactly the learning rates torch gives, step for step.

A scheduler reads and sets ``optimizer.lr`` (a fastnn optimizer has one learning rate, where
a torch optimizer has one per parameter group: lists of learning rates, such as
``get_last_lr()`` and ``base_lrs``, have one entry).  Call ``scheduler.step()`` after
``optimizer.step()``: once per epoch, or once per batch for a per-step schedule
(``OneCycleLR``, a warm-up); ``fastnn.training.LRSchedulerCallback`` does it inside
``Trainer.fit``.  The compiled step reads ``optimizer.lr`` on every call, so a schedule
costs no re-planning.

As in torch:

* constructing a scheduler records the optimizer's starting learning rate once, as
  ``optimizer.initial_lr`` (torch's ``param_groups[i]["initial_lr"]``; a second scheduler on
  the same optimizer finds it there), sets ``base_lrs = [optimizer.initial_lr]``, and takes
  an initial step (``last_epoch`` goes from -1 to 0 and the lr is set for epoch 0);
* the schedules are *chainable*: each ``step()`` computes the next lr from the optimizer's
  current lr (so two schedulers stepped on one optimizer compose, as in torch), except where
  torch itself uses a closed form (``SequentialLR`` starting a scheduler at a milestone);
* ``state_dict()`` is every attribute except the optimizer; ``load_state_dict`` restores it
  (the optimizer's lr lives in the optimizer's own ``state_dict``: restore both);
* the first ``step()`` warns when the optimizer has not taken a step yet (the schedule
  would skip its first value).

Differences from torch (none changes a learning rate torch would produce, except the
first):

* a computed lr below 0 is set as 0.0, because fastnn optimizers reject a negative lr.
  torch gives one in two places: rounding (``LinearLR(end_factor=0)`` ends at about -2e-18
  for some ``total_iters``) and ``OneCycleLR(anneal_strategy="linear")`` extrapolated by
  the step after the last one (``last_epoch == total_steps``, a value no step uses);
* arguments are validated at construction, with errors naming the class, the argument,
  what was expected and what was given (torch accepts e.g. ``step_size=0`` or
  ``T_max=0`` and fails later with a ZeroDivisionError, or unsorted SequentialLR
  milestones);
* ``OneCycleLR`` gives a phase of length 0 its end value where torch raises
  ZeroDivisionError (e.g. ``pct_start=0.1, total_steps=10``: at construction);
* the deprecated ``step(epoch)`` argument is not offered.  ``get_lr()`` (the chainable
  formula) is there for subclasses, as in torch.
"""
from __future__ import annotations

import copy
import math
import numbers
import warnings
from bisect import bisect_right
from collections import Counter
from typing import Any, Sequence

from .._checks import int_in, real
from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
           "LinearLR", "OneCycleLR", "ReduceLROnPlateau", "SequentialLR"]


# ------------------------------------------------------------------------ argument checks
def _check_optimizer(who, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{who}: optimizer must be a fastnn Optimizer (e.g. fastnn.SGD), got "
                        f"{type(optimizer).__name__}")
    if not hasattr(optimizer, "lr"):
        raise TypeError(f"{who}: optimizer {type(optimizer).__name__} has no lr attribute to "
                        "schedule")


def _in_range(who, name, value, lo, hi, lo_open=False, hi_open=False):
    """A real number in the interval [lo, hi] (ends open as asked), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not ((v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)):
        rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{who}: {name} must be in {rng}, got {value!r}")
    return v


def _positive(who, name, value):
    v = real(who, name, value)
    if v == 0:
        raise ValueError(f"{who}: {name} must be > 0, got {value!r}")
    return v


def _one(who, name, value, check):
    """A per-parameter-group argument: a number, or (as torch takes it) a list/tuple with
    one entry, fastnn optimizers having one group."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"{who}: {name} must be a number or a list of one (a fastnn "
                             f"optimizer has one parameter group), got {len(value)} values")
        value = value[0]
    return check(who, name, value)


def _choice(who, name, value, choices):
    if value not in choices:
        raise ValueError(f"{who}: {name} must be one of {', '.join(map(repr, choices))}, got "
                         f"{value!r}")
    return value


def _set_lr(optimizer, lr):
    # a value below 0 is rounding error (see the module docstring): fastnn optimizers reject
    # a negative lr, so it becomes 0.0
    optimizer.lr = lr if lr >= 0 else 0.0


def _check_state(who, state, expected):
    if not isinstance(state, dict):
        raise TypeError(f"{who}: expected a dict (a state_dict()), got {type(state).__name__}")
    if set(state) != set(expected):
        raise KeyError(f"{who}: not a state_dict of this scheduler: missing keys "
                       f"{sorted(set(expected) - set(state))}, unexpected keys "
                       f"{sorted(set(state) - set(expected))}")


# ------------------------------------------------------------------------------ the base
class LRScheduler:
    """Base class of the schedules (torch.optim.lr_scheduler.LRScheduler).

    Subclasses set their arguments, call ``super().__init__(optimizer, last_epoch)`` and
    define ``get_lr()``: the lr for epoch ``last_epoch`` as a list of one float, usually from
    the optimizer's current lr (chainable form); optionally ``_get_closed_form_lr()``, the
    same from ``base_lrs`` alone.

    ``last_epoch`` is the index of the current epoch (the number of ``step()`` calls since
    the schedule started); ``-1`` starts it, a value >= 0 resumes it (the optimizer must then
    carry ``initial_lr`` from the scheduler that started it).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    last_epoch : int, optional
        The index of the last epoch (-1: start fresh).
    """
    _is_initial = False
    _get_lr_called_within_step = False
    _TRANSIENT = ("_is_initial", "_get_lr_called_within_step")

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        who = type(self).__name__
        _check_optimizer(who, optimizer)
        last_epoch = int_in(who, "last_epoch", last_epoch, -1)
        if last_epoch == -1:
            if getattr(optimizer, "initial_lr", None) is None:
                optimizer.initial_lr = float(optimizer.lr)
        elif getattr(optimizer, "initial_lr", None) is None:
            raise KeyError(f"{who}: last_epoch={last_epoch} resumes a schedule, but the "
                           "optimizer has no initial_lr (it is set when a scheduler starts "
                           "with last_epoch=-1); start with last_epoch=-1 and use "
                           "load_state_dict to resume")
        self.optimizer = optimizer
        self.base_lrs = [optimizer.initial_lr]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_last_lr(self) -> list[float]:
        """The learning rate the last step set, as a list with one float (torch returns one
        per parameter group)."""
        return list(self._last_lr)

    def get_lr(self) -> list[float]:
        """The chainable formula: the lr for epoch ``last_epoch`` (a list of one float).
        Called by ``step()``; to read the current lr use ``get_last_lr()``."""
        raise NotImplementedError

    def _warn_get_lr(self):
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, please "
                          "use `get_last_lr()`.", UserWarning, stacklevel=3)

    def step(self) -> None:
        """Advance the schedule by one epoch (or one batch, for a per-step schedule) and set
        the optimizer's lr.  Call it after ``optimizer.step()``."""
        if self._step_count == 1 and getattr(self.optimizer, "steps", 1) == 0:
            warnings.warn(f"{type(self).__name__}.step() was called before optimizer.step(): "
                          "call optimizer.step() first, else the first value of the schedule "
                          "is skipped (as in torch)", UserWarning, stacklevel=2)
        self._step_count += 1
        self._update_lr()

    def _update_lr(self, epoch=None):
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed = getattr(self, "_get_closed_form_lr", None)
                values = closed() if closed is not None else self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        if len(values) != 1:
            raise ValueError(f"{type(self).__name__}.get_lr must return a list of one "
                             f"learning rate, got {len(values)}")
        _set_lr(self.optimizer, values[0])
        self._last_lr = [float(self.optimizer.lr)]

    def _lr(self):
        """The optimizer's current lr, as get_lr's chainable formulas start from it."""
        return self.optimizer.lr

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute but the optimizer (copies)."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                if k != "optimizer" and k not in self._TRANSIENT}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict()`` of the same kind of scheduler (the optimizer's lr is
        restored by the optimizer's own load_state_dict)."""
        _check_state(f"{type(self).__name__}.load_state_dict", state_dict, self.state_dict())
        self.__dict__.update(copy.deepcopy(state_dict))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self._last_lr[0]})"


# ------------------------------------------------------------------------ the schedules
class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs:
    ``lr = base_lr * gamma ** (epoch // step_size)``.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    step_size : int
        Epochs between decays (>= 1).
    gamma : float, optional
        The decay factor.
    last_epoch : int, optional
        The index of the last epoch (-1: start fresh).
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.step_size = int_in("StepLR", "step_size", step_size, 1)
        self.gamma = real("StepLR", "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_get_lr()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [self._lr()]
        return [self._lr() * self.gamma]

    def _get_closed_form_lr(self):
        return [b * self.gamma ** (self.last_epoch // self.step_size) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each epoch in ``milestones`` (by ``gamma ** n`` at an
    epoch listed n times): ``lr = base_lr * gamma ** (number of milestones <= epoch)``.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    milestones : sequence of int
        The epochs at which to decay.
    gamma : float, optional
        The decay factor.
    last_epoch : int, optional
        The index of the last epoch (-1: start fresh).
    """

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int],
                 gamma: float = 0.1, last_epoch: int = -1) -> None:
        who = "MultiStepLR"
        try:
            ms = list(milestones)
        except TypeError:
            raise TypeError(f"{who}: milestones must be a list of epoch numbers (ints >= 0), "
                            f"got {type(milestones).__name__}") from None
        self.milestones = Counter(int_in(who, f"milestones[{i}]", m, 0)
                                  for i, m in enumerate(ms))
        self.gamma = real(who, "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_get_lr()
        if self.last_epoch not in self.milestones:
            return [self._lr()]
        return [self._lr() * self.gamma ** self.milestones[self.last_epoch]]

    def _get_closed_form_lr(self):
        ms = sorted(self.milestones.elements())
        return [b * self.gamma ** bisect_right(ms, self.last_epoch) for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch: ``lr = base_lr * gamma ** epoch``.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    gamma : float
        The per-epoch factor.
    last_epoch : int, optional
        The index of the last epoch (-1: start fresh).
    """

    def __init__(self, optimizer: Optimizer, gamma: float,
                 last_epoch: int = -1) -> None:
        self.gamma = real("ExponentialLR", "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_get_lr()
        if self._is_initial:          # resuming: the initial step does not advance the lr
            return [self._lr()]
        return [self._lr() * self.gamma]

    def _get_closed_form_lr(self):
        return [b * self.gamma ** self.last_epoch for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base lr to ``eta_min`` over ``T_max`` epochs (SGDR without
    restarts): ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``,
    computed, as torch does, by the recursive (chainable) form; past ``T_max`` it rises
    again (a cosine of period ``2 * T_max``).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    T_max : int
        Epochs of the half period (>= 1).
    eta_min : float, optional
        The minimum lr.
    last_epoch : int, optional
        The index of the last epoch (-1: start fresh).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.T_max = int_in("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = real("CosineAnnealingLR", "eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_get_lr()
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return [self._lr()]
        if self._step_count == 1 and e > 0:
            return [lo + (b - lo) * (1 + math.cos(e * math.pi / T)) / 2 for b in self.base_lrs]
        if (e - 1 - T) % (2 * T) == 0:
            return [self._lr() + (b - lo) * (1 - math.cos(math.pi / T)) / 2
                    for b in self.base_lrs]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (self._lr() - lo) + lo]

    def _get_closed_form_lr(self):
        lo = self.eta_min
        return [lo + (b - lo) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for b in self.base_lrs]


class LinearLR(LRScheduler):
    """Warm-up (or decay) by a linearly changing factor: the lr is ``base_lr * factor`` with
    the factor going from ``start_factor`` at epoch 0 to ``end_factor`` at epoch
    ``total_iters``, then constant.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    start_factor : float, optional
        The factor at epoch 0, in (0, 1].
    end_factor : float, optional
        The factor from ``total_iters`` on, in [0, 1].
    total_iters : int, optional
        Epochs of the linear change.
    last_epoch : int, optional
        The index of the last epoch (-1: start fresh).
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5,
                 last_epoch: int = -1) -> None:
        who = "LinearLR"
        self.start_factor = _in_range(who, "start_factor", start_factor, 0, 1, lo_open=True)
        self.end_factor = _in_range(who, "end_factor", end_factor, 0, 1)
        self.total_iters = int_in(who, "total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_get_lr()
        s, t = self.start_factor, self.end_factor
        if self.last_epoch == 0:
            return [self._lr() * s]
        if self._is_initial or self.last_epoch > self.total_iters:
            return [self._lr()]
        return [self._lr() * (1.0 + (t - s) / (self.total_iters * s
                                               + (self.last_epoch - 1) * (t - s)))]

    def _get_closed_form_lr(self):
        s, t = self.start_factor, self.end_factor
        return [b * (s + (t - s) * min(self.total_iters, self.last_epoch) / self.total_iters)
                for b in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, "Super-Convergence"), stepped after every batch:
    the lr rises from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of
    ``total_steps`` (or ``epochs * steps_per_epoch``) and anneals to
    ``max_lr / div_factor / final_div_factor`` over the rest (``three_phase``: back to the
    initial lr symmetrically, then down to the minimum), by a cosine or linearly
    (``anneal_strategy``).

    With ``cycle_momentum`` the momentum moves inversely, between ``max_momentum`` (at the
    start and end) and ``base_momentum`` (at the peak lr): ``optimizer.momentum`` for SGD
    or RMSprop, beta1 of ``optimizer.betas`` for an optimizer that has betas (Adam), as
    torch chooses.  Stepping past ``total_steps`` raises a ValueError.

    A phase of length 0 (``pct_start * total_steps == 1``, where the warm-up ends at step
    0; or ``pct_start=1`` on the step after the last) gives the phase's end value; torch
    raises ZeroDivisionError there.

    torch keeps ``initial_lr``, ``max_lr``, ``min_lr``, ``max_momentum`` and
    ``base_momentum`` in the optimizer's parameter group; here they are attributes of the
    scheduler (and in its state_dict), and ``optimizer.initial_lr`` is set as in torch.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    max_lr : float
        The peak lr.
    total_steps : int, optional
        Steps of the cycle (else ``epochs * steps_per_epoch``).
    epochs, steps_per_epoch : int, optional
        Give the cycle's length instead of ``total_steps``.
    pct_start : float, optional
        The fraction of the cycle spent rising.
    anneal_strategy : {"cos", "linear"}, optional
        The annealing shape.
    cycle_momentum : bool, optional
        Cycle SGD's momentum (or Adam's beta1) inversely to the lr.
    base_momentum, max_momentum : float, optional
        The momentum's range.
    div_factor : float, optional
        initial_lr = max_lr / div_factor.
    final_div_factor : float, optional
        min_lr = initial_lr / final_div_factor.
    three_phase : bool, optional
        Use the three-phase schedule.
    last_epoch : int, optional
        The index of the last epoch (-1: start fresh).
    """

    def __init__(self, optimizer: Optimizer, max_lr: float,
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float = 0.85, max_momentum: float = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, last_epoch: int = -1) -> None:
        who = "OneCycleLR"
        _check_optimizer(who, optimizer)
        if total_steps is not None:
            self.total_steps = int_in(who, "total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (int_in(who, "epochs", epochs, 1)
                                * int_in(who, "steps_per_epoch", steps_per_epoch, 1))
        else:
            raise ValueError(f"{who}: give total_steps, or both epochs and steps_per_epoch "
                             f"(got total_steps={total_steps!r}, epochs={epochs!r}, "
                             f"steps_per_epoch={steps_per_epoch!r})")
        pct_start = _in_range(who, "pct_start", pct_start, 0, 1)
        self._anneal_func_type = _choice(who, "anneal_strategy", anneal_strategy,
                                         ("cos", "linear"))
        n = self.total_steps
        if three_phase:
            self._schedule_phases = [
                dict(end_step=float(pct_start * n) - 1, start_lr="initial_lr",
                     end_lr="max_lr", start_momentum="max_momentum",
                     end_momentum="base_momentum"),
                dict(end_step=float(2 * pct_start * n) - 2, start_lr="max_lr",
                     end_lr="initial_lr", start_momentum="base_momentum",
                     end_momentum="max_momentum"),
                dict(end_step=n - 1, start_lr="initial_lr", end_lr="min_lr",
                     start_momentum="max_momentum", end_momentum="max_momentum")]
        else:
            self._schedule_phases = [
                dict(end_step=float(pct_start * n) - 1, start_lr="initial_lr",
                     end_lr="max_lr", start_momentum="max_momentum",
                     end_momentum="base_momentum"),
                dict(end_step=n - 1, start_lr="max_lr", end_lr="min_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum")]
        self.max_lr = _one(who, "max_lr", max_lr, _positive)
        div_factor = _positive(who, "div_factor", div_factor)
        final_div_factor = _positive(who, "final_div_factor", final_div_factor)
        self.initial_lr = self.max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        last_epoch = int_in(who, "last_epoch", last_epoch, -1)
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if not (hasattr(optimizer, "betas") or hasattr(optimizer, "momentum")):
                raise ValueError(f"{who}: cycle_momentum=True needs an optimizer with a "
                                 f"momentum attribute (SGD) or betas (Adam); "
                                 f"{type(optimizer).__name__} has neither (pass "
                                 "cycle_momentum=False)")
            self.use_beta1 = hasattr(optimizer, "betas")
            self.max_momentum = _one(who, "max_momentum", max_momentum, real)
            self.base_momentum = _one(who, "base_momentum", base_momentum, real)
        if last_epoch == -1:
            optimizer.initial_lr = self.initial_lr
            if self.cycle_momentum:
                self._set_momentum(optimizer, self.max_momentum)
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, optimizer, m):
        if self.use_beta1:
            optimizer.betas = (m, *tuple(optimizer.betas)[1:])
        else:
            optimizer.momentum = m

    def _anneal_func(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        self._warn_get_lr()
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {step_num} times; the schedule has "
                             f"total_steps={self.total_steps}")
        start_step = 0.0
        last = len(self._schedule_phases) - 1
        for i, phase in enumerate(self._schedule_phases):
            end_step = phase["end_step"]
            if step_num <= end_step or i == last:
                # a phase of no length (pct_start * total_steps == 1, or pct_start=1 at
                # the step after the last) is at its end: torch divides by zero there
                pct = ((step_num - start_step) / (end_step - start_step)
                       if end_step != start_step else 1.0)
                lr = self._anneal_func(getattr(self, phase["start_lr"]),
                                       getattr(self, phase["end_lr"]), pct)
                if self.cycle_momentum:
                    m = self._anneal_func(getattr(self, phase["start_momentum"]),
                                          getattr(self, phase["end_momentum"]), pct)
                    self._set_momentum(self.optimizer, m)
                break
            start_step = phase["end_step"]
        return [lr]


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` (not below ``min_lr``) when the metric passed to
    ``step(metrics)`` has not improved for more than ``patience`` epochs, then wait
    ``cooldown`` epochs before counting again.  ``mode`` "min" (a loss) or "max" (an
    accuracy); an improvement beats the best value by ``threshold``, relative
    (``threshold_mode="rel"``: below ``best * (1 - threshold)`` in min mode) or absolute
    ("abs": below ``best - threshold``).  A reduction smaller than ``eps`` is skipped.

    As torch's, it takes no initial step and sets no ``initial_lr``: ``last_epoch`` starts
    at 0 and the lr is left as it is until a reduction.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    mode : {"min", "max"}, optional
        Whether the metric should fall or rise.
    factor : float, optional
        The decay factor (< 1).
    patience : int, optional
        Epochs without improvement before decaying.
    threshold : float, optional
        The smallest improvement that counts.
    threshold_mode : {"rel", "abs"}, optional
        Relative or absolute threshold.
    cooldown : int, optional
        Epochs to wait after a decay.
    min_lr : float, optional
        The lr's lower bound.
    eps : float, optional
        Smaller changes of the lr are skipped.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0, eps: float = 1e-8) -> None:
        who = "ReduceLROnPlateau"
        self.factor = _in_range(who, "factor", factor, 0, 1, hi_open=True)
        _check_optimizer(who, optimizer)
        self.optimizer = optimizer
        self.min_lrs = [_one(who, "min_lr", min_lr, real)]
        self.patience = int_in(who, "patience", patience, 0)
        self.cooldown = int_in(who, "cooldown", cooldown, 0)
        self.eps = real(who, "eps", eps)
        self.last_epoch = 0
        self._last_lr = [float(optimizer.lr)]
        self._init_is_better(mode, real(who, "threshold", threshold), threshold_mode)
        self._reset()

    def _reset(self):
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _init_is_better(self, mode, threshold, threshold_mode):
        who = "ReduceLROnPlateau"
        self.mode = _choice(who, "mode", mode, ("min", "max"))
        self.threshold_mode = _choice(who, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.threshold = threshold
        self.mode_worse = math.inf if mode == "min" else -math.inf

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics: float) -> None:  # type: ignore[override]
        """One epoch's value of the monitored metric (e.g. the validation loss)."""
        try:
            if isinstance(metrics, (str, bytes)):
                raise TypeError
            current = float(metrics)           # a number, or a 0-d / 1-element array
        except (TypeError, ValueError):
            raise TypeError(f"ReduceLROnPlateau.step: metrics must be a number, got "
                            f"{type(metrics).__name__}") from None
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0           # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [float(self.optimizer.lr)]

    def _reduce_lr(self):
        old = float(self.optimizer.lr)
        new = max(old * self.factor, self.min_lrs[0])
        if old - new > self.eps:
            _set_lr(self.optimizer, new)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)

    def __repr__(self):
        return (f"ReduceLROnPlateau(mode={self.mode!r}, best={self.best}, "
                f"num_bad_epochs={self.num_bad_epochs}, lr={self._last_lr[0]})")


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another: ``schedulers[i]`` from epoch
    ``milestones[i - 1]`` on (``len(milestones) == len(schedulers) - 1``).  At a milestone
    the next scheduler starts from epoch 0 of its own schedule (its closed form, from the
    optimizer's ``initial_lr``), as in torch.  The schedulers must share the optimizer;
    ReduceLROnPlateau cannot be one of them (its step needs a metric).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    schedulers : sequence of LRScheduler
        The schedules, in order.
    milestones : sequence of int
        The epochs at which the next one takes over.
    last_epoch : int, optional
        The index of the last epoch (-1: start fresh).
    """

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler],
                 milestones: Sequence[int], last_epoch: int = -1) -> None:
        who = "SequentialLR"
        _check_optimizer(who, optimizer)
        try:
            schedulers = list(schedulers)
        except TypeError:
            raise TypeError(f"{who}: schedulers must be a list of schedulers, got "
                            f"{type(schedulers).__name__}") from None
        if not schedulers:
            raise ValueError(f"{who}: expects at least one scheduler, got none")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler):
                raise TypeError(f"{who}: schedulers[{i}] must be a fastnn LRScheduler, got "
                                f"{type(s).__name__}")
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(f"{who}: schedulers[{i}] is a ReduceLROnPlateau, which "
                                 "cannot be sequenced (its step needs a metric)")
            if s.optimizer is not optimizer:
                raise ValueError(f"{who}: schedulers[{i}] ({type(s).__name__}) schedules "
                                 "another optimizer; all must schedule the optimizer given")
        try:
            milestones = list(milestones)
        except TypeError:
            raise TypeError(f"{who}: milestones must be a list of epoch numbers, got "
                            f"{type(milestones).__name__}") from None
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{who}: expects one milestone fewer than schedulers, got "
                             f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        milestones = [int_in(who, f"milestones[{i}]", m, 0) for i, m in enumerate(milestones)]
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"{who}: milestones must be increasing, got {milestones}")
        last_epoch = int_in(who, "last_epoch", last_epoch, -1)
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        self.base_lrs = [optimizer.initial_lr]
        # back to the initial lr, undo the sub-schedulers' initial steps, and take the
        # initial step of the one that runs at epoch 0
        _set_lr(optimizer, optimizer.initial_lr)
        self._recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def _recursive_undo(self, sched=None):
        s = self if sched is None else sched
        if hasattr(s, "_schedulers"):
            for sub in s._schedulers:
                self._recursive_undo(sub)
        elif hasattr(s, "last_epoch"):
            s.last_epoch -= 1

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            s._update_lr(0)
        else:
            s.step()
        self._last_lr = s.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """The state, with each scheduler's state_dict under "_schedulers"."""
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                 if k not in ("optimizer", "_schedulers") and k not in self._TRANSIENT}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        who = "SequentialLR.load_state_dict"
        _check_state(who, state_dict, self.state_dict())
        subs = state_dict["_schedulers"]
        if not isinstance(subs, list) or len(subs) != len(self._schedulers):
            raise ValueError(f"{who}: expected the states of {len(self._schedulers)} "
                             f"schedulers, got {subs!r:.60}")
        for s, st in zip(self._schedulers, subs):       # check all before changing any
            _check_state(f"{who} ({type(s).__name__})", st, s.state_dict())
        self.__dict__.update({k: copy.deepcopy(v) for k, v in state_dict.items()
                              if k != "_schedulers"})
        for s, st in zip(self._schedulers, subs):
            s.load_state_dict(st)
