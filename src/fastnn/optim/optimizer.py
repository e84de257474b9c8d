"""The Optimizer base class: the state contract between optimizers and the kernels (see
fastnn.optim's docstring)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import specialized
from .._kernels import optim as _ko
from ..nn import Module, Parameter
from .._typing import ParamsLike

__all__ = ["Optimizer"]


def _param_list(who, params):
    if isinstance(params, Module):
        raise TypeError(f"{who}: pass model.parameters(), not the model")
    if isinstance(params, Parameter):
        raise TypeError(f"{who}: params must be an iterable of Parameters (e.g. "
                        "model.parameters()), got a single Parameter")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{who}: params must be an iterable of Parameters, got "
                        f"{type(params).__name__}") from None
    if not params:
        raise ValueError(f"{who}: got an empty parameter list")
    seen = set()
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"{who}: params[{i}] is a {type(p).__name__}, not a "
                            "fastnn Parameter")
        if id(p) in seen:
            raise ValueError(f"{who}: params[{i}] appears more than once")
        seen.add(id(p))
    return params


def check_state_keys(who, state, keys):
    """A state_dict: a dict with exactly these keys."""
    if not isinstance(state, dict):
        raise TypeError(f"{who}: expected a dict, got {type(state).__name__}")
    keys = set(keys)
    if set(state) != keys:
        raise KeyError(f"{who}: missing keys {sorted(keys - set(state))}, unexpected "
                       f"keys {sorted(set(state) - keys)}")


def check_buffers(who, bufs, params, name):
    """One state buffer per parameter from a state_dict: each None or an array of the
    parameter's shape and dtype; returned as flat C-contiguous copies.  name(i) names
    buffer i in the messages."""
    col = []
    for i, (b, p) in enumerate(zip(bufs, params)):
        if b is None:
            col.append(None)
            continue
        if not isinstance(b, np.ndarray) or b.shape != p.shape or b.dtype != p.dtype:
            got = (f"shape {b.shape}, dtype {b.dtype}" if isinstance(b, np.ndarray)
                   else type(b).__name__)
            raise ValueError(f"{who}: {name(i)} must have shape {p.shape} and dtype "
                             f"{p.dtype}, got {got}")
        col.append(np.array(b, order="C", copy=True).reshape(-1))
    return col


class Optimizer:
    """Base class of fastnn's optimizers: the parameter list, the step count and the state
    contract of the module docstring.  Subclasses set ``_kind``, keep ``_hyper`` current and
    define ``_state_for(i)``."""
    _kind = None

    def __init__(self, params: ParamsLike) -> None:
        self.params = _param_list(type(self).__name__, params)
        self._hyper = ()
        self._state = [None] * len(self.params)    # per parameter: tuple of buffers or None
        self._state_version = 0
        self.steps = 0

    def zero_grad(self) -> None:
        """Set the gradient of every parameter to zero."""
        for p in self.params:
            p.zero_grad()

    def _state_for(self, i):
        """(buffers, new) for parameter i's next update: a tuple of the state buffers it
        uses (None where unused), new=True when they were just created (the update
        initialises them)."""
        raise NotImplementedError

    def _new_state(self, i, n):
        """n fresh buffers for parameter i (uninitialised: the first update writes them)."""
        flat = self.params[i]._flat
        st = self._state[i] = tuple(np.empty_like(flat) for _ in range(n))
        self._state_version += 1
        return st

    def _fits(self, i):
        """Whether parameter i's buffers exist and still fit it (shape and dtype)."""
        st = self._state[i]
        flat = self.params[i]._flat
        return st is not None and all(b is None or (b.shape[0] == flat.shape[0] and
                                                    b.dtype == flat.dtype) for b in st)

    def _prepare_state(self):
        pairs = [self._state_for(i) for i in range(len(self.params))]
        return [b for b, _ in pairs], [f for _, f in pairs]

    def _drop_state(self, indices):
        for i in indices:
            self._state[i] = None
        self._state_version += 1

    def _count_steps(self, n):
        self.steps += n

    def step(self) -> None:
        """Update every parameter from its gradient (one fused kernel call each)."""
        kind, hyper, t = int(self._kind), self._hyper, self.steps + 1
        for i, p in enumerate(self.params):
            p._materialize_grad()        # no gradient since zero_grad(): it is zero
            state, first = self._state_for(i)
            _UPDATE[p._flat.dtype](kind, hyper, t, p._flat, p._gflat, state, first)
        self._count_steps(1)


_UPDATE = specialized(_ko._update)


class _HyperOptimizer(Optimizer):
    """An optimizer described by tables (Adam, AdamW, RMSprop): its hyperparameters
    (``_hyper_names``, each validated by ``_hyper_checks[name]`` when set, so ``step()``
    never re-checks), its state buffers (``_state_names``; ``_needed()`` says which the next
    update uses), zero-initialised when first needed, as torch does.  Gives properties,
    ``state_dict`` / ``load_state_dict`` and ``__repr__`` once for all of them."""
    _hyper_names = ()
    _hyper_checks = {}
    _state_names = ()

    def __init__(self, params: ParamsLike, **hyper: Any) -> None:
        super().__init__(params)
        who = type(self).__name__
        for name in self._hyper_names:
            setattr(self, "_" + name, self._hyper_checks[name](who, name, hyper[name]))
        self._needs = None
        self._sync_hyper()

    def _kernel_hyper(self):
        """The hyperparameters as the kernel reads them (floats, in opt_update's order)."""
        raise NotImplementedError

    def _needed(self):
        """Which of ``_state_names`` the next update uses (bools)."""
        return (True,) * len(self._state_names)

    def _sync_hyper(self):
        self._hyper = tuple(float(v) for v in self._kernel_hyper())
        needs = self._needed()
        if needs != self._needs:             # another set of buffers: re-point the kernel
            self._needs = needs
            self._state_version += 1

    def _state_for(self, i):
        needs = self._needs
        st = self._state[i]
        if st is not None and self._fits(i):
            if all(b is not None for b, n in zip(st, needs) if n):
                return st, False
            flat = self.params[i]._flat       # a buffer that became needed: zeros
            st = tuple(np.zeros_like(flat) if b is None and n else b
                       for b, n in zip(st, needs))
            self._state[i] = st
            self._state_version += 1
            return st, False
        flat = self.params[i]._flat
        st = self._state[i] = tuple(np.zeros_like(flat) if n else None for n in needs)
        self._state_version += 1
        return st, True

    def __repr__(self):
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._hyper_names)
        return f"{type(self).__name__}({args})"

    def state_dict(self) -> dict[str, Any]:
        """The hyperparameters, ``steps`` and, per state buffer, a list with a copy for each
        parameter (None where it has none yet)."""
        d = {n: getattr(self, n) for n in self._hyper_names}
        d["steps"] = self.steps
        for j, key in enumerate(self._state_names):
            d[key] = [None if st is None or st[j] is None else st[j].reshape(p.shape).copy()
                      for st, p in zip(self._state, self.params)]
        return d

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict() of the same optimizer over parameters of the same shapes
        and dtypes; everything is checked before anything changes."""
        who = f"{type(self).__name__}.load_state_dict"
        check_state_keys(who, state, set(self._hyper_names) | {"steps"} |
                         set(self._state_names))
        hyper = {n: self._hyper_checks[n](who, n, state[n]) for n in self._hyper_names}
        steps = state["steps"]
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"{who}: steps must be an int >= 0, got {steps!r}")
        cols = []
        for key in self._state_names:
            bufs = state[key]
            if not isinstance(bufs, (list, tuple)) or len(bufs) != len(self.params):
                got = len(bufs) if isinstance(bufs, (list, tuple)) else type(bufs).__name__
                raise ValueError(f"{who}: {key} must be a list of {len(self.params)} arrays "
                                 f"(or None), one per parameter, got {got}")
            cols.append(check_buffers(who, bufs, self.params, lambda i: f"{key}[{i}]"))
        for n, v in hyper.items():
            setattr(self, "_" + n, v)
        self.steps = int(steps)
        self._state = [None if all(c[i] is None for c in cols) else
                       tuple(c[i] for c in cols) for i in range(len(self.params))]
        self._state_version += 1
        self._sync_hyper()


def hyperparameter(name: str, doc: str) -> Any:
    """A validated hyperparameter property of a _HyperOptimizer (read on every step)."""
    def fget(self):
        return getattr(self, "_" + name)

    def fset(self, value):
        setattr(self, "_" + name, self._hyper_checks[name](type(self).__name__, name, value))
        self._sync_hyper()
    return property(fget, fset, doc=doc)

