"""The Optimizer base class: the state contract between optimizers and the kernels (see
fastnn.optim's docstring)."""
import numpy as np

from .._checks import specialized
from .._kernels import optim as _ko
from ..nn import Module, Parameter

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


class Optimizer:
    """Base class of fastnn's optimizers: the parameter list, the step count and the state
    contract of the module docstring.  Subclasses set ``_kind``, keep ``_hyper`` current and
    define ``_state_for(i)``."""
    _kind = None

    def __init__(self, params):
        self.params = _param_list(type(self).__name__, params)
        self._hyper = ()
        self._state = [None] * len(self.params)    # per parameter: tuple of buffers or None
        self._state_version = 0
        self.steps = 0

    def zero_grad(self):
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
        return st is not None and all(b.shape[0] == flat.shape[0] and b.dtype == flat.dtype
                                      for b in st)

    def _prepare_state(self):
        pairs = [self._state_for(i) for i in range(len(self.params))]
        return [b for b, _ in pairs], [f for _, f in pairs]

    def _drop_state(self, indices):
        for i in indices:
            self._state[i] = None
        self._state_version += 1

    def _count_steps(self, n):
        self.steps += n

    def step(self):
        """Update every parameter from its gradient (one fused kernel call each)."""
        kind, hyper, t = int(self._kind), self._hyper, self.steps + 1
        for i, p in enumerate(self.params):
            p._materialize_grad()        # no gradient since zero_grad(): it is zero
            state, first = self._state_for(i)
            _UPDATE[p._flat.dtype](kind, hyper, t, p._flat, p._gflat, state, first)
        self._count_steps(1)


_UPDATE = specialized(_ko._update)
