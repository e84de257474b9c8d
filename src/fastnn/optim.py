"""Optimizers.  ``SGD`` follows torch.optim.SGD exactly; each parameter's update is one fused
kernel call."""
import numbers

import numpy as np

from ._checks import EMPTY1, specialized
from ._kernels import optim as _ko
from .nn import Module, Parameter

__all__ = ["SGD"]


def _hyper(who, name, value, minimum=0.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < minimum:
        raise ValueError(f"{who}: {name} must be finite and >= {minimum}, got {value!r}")
    return v


class SGD:
    """Stochastic gradient descent with momentum, as torch.optim.SGD.

    For each parameter p with gradient g, one step does, in this order::

        g = -g if maximize else g
        g = g + weight_decay * p
        buf = g                                    on the first step (momentum != 0)
        buf = momentum * buf + (1 - dampening) * g on later steps
        g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    ``weight_decay`` is the gradient of an L2 term (weight_decay / 2) * ||p||^2 added to the
    loss; the loss value itself does not include it.  Note the momentum form: scikit-learn
    and CS231n use ``v = mu * v - lr * g; p += v``, which equals this form with a constant
    learning rate (v = -lr * buf) but not when lr changes between steps, and whose first step
    starts from v = 0 (a step of lr * g instead of lr * g here).

    Every parameter is updated on every step, including one that received no gradient since
    ``zero_grad()`` (its gradient is zero; weight decay and momentum still apply).  PyTorch
    skips such a parameter because its ``grad`` is None.

    Attributes ``lr``, ``momentum``, ``dampening``, ``weight_decay``, ``nesterov`` and
    ``maximize`` may be changed between steps (e.g. for a learning-rate schedule).

    The compiled training step (fastnn.training.compiled) updates the parameters with the
    same kernel; it talks to the optimizer only through this contract:

    ``_hyper``
        (lr, momentum, dampening, weight_decay, nesterov, maximize), kept current by the
        setters (read on every step).
    ``_prepare_buffers()``
        the momentum buffers for the next update -- created where missing by the one
        buffer rule ``step()`` uses too -- as (buffers, first flags); None buffers when
        momentum is 0.
    ``_buffers_version``
        changes whenever a buffer is created, replaced or dropped (so a caller holding
        pointers to the buffers knows when to ask again).
    ``_drop_buffers(indices)``
        forget buffers created for an update that was not applied.
    ``_count_steps(n)``
        n updates were applied.
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        who = "SGD"
        if isinstance(params, Module):
            raise TypeError("SGD: pass model.parameters(), not the model")
        if isinstance(params, Parameter):
            raise TypeError("SGD: params must be an iterable of Parameters (e.g. "
                            "model.parameters()), got a single Parameter")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"SGD: params must be an iterable of Parameters, got "
                            f"{type(params).__name__}") from None
        if not params:
            raise ValueError("SGD: got an empty parameter list")
        seen = set()
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"SGD: params[{i}] is a {type(p).__name__}, not a "
                                "fastnn Parameter")
            if id(p) in seen:
                raise ValueError(f"SGD: params[{i}] appears more than once")
            seen.add(id(p))
        self.params = params
        self._hyper = None
        self._lr = _hyper(who, "lr", lr)
        self._momentum = _hyper(who, "momentum", momentum)
        self._dampening = _hyper(who, "dampening", dampening)
        self._nesterov = False
        self._maximize = bool(maximize)
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self._bufs = [None] * len(params)   # momentum buffers, created on the first step
        self._buffers_version = 0
        self.steps = 0

    def _sync_hyper(self):
        self._hyper = (self._lr, self._momentum, self._dampening, self._weight_decay,
                       self._nesterov, self._maximize)

    # hyperparameters are validated when set, so step() need not check them
    def _check_nesterov(self, nesterov, momentum, dampening):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and "
                             "dampening == 0")

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, v):
        self._lr = _hyper("SGD", "lr", v)
        self._sync_hyper()

    @property
    def momentum(self):
        return self._momentum

    @momentum.setter
    def momentum(self, v):
        v = _hyper("SGD", "momentum", v)
        self._check_nesterov(self._nesterov, v, self._dampening)
        self._momentum = v
        self._sync_hyper()

    @property
    def dampening(self):
        return self._dampening

    @dampening.setter
    def dampening(self, v):
        v = _hyper("SGD", "dampening", v)
        self._check_nesterov(self._nesterov, self._momentum, v)
        self._dampening = v
        self._sync_hyper()

    @property
    def weight_decay(self):
        return self._weight_decay

    @weight_decay.setter
    def weight_decay(self, v):
        self._weight_decay = _hyper("SGD", "weight_decay", v)
        self._sync_hyper()

    @property
    def nesterov(self):
        return self._nesterov

    @nesterov.setter
    def nesterov(self, v):
        v = bool(v)
        self._check_nesterov(v, self._momentum, self._dampening)
        self._nesterov = v
        self._sync_hyper()

    @property
    def maximize(self):
        return self._maximize

    @maximize.setter
    def maximize(self, v):
        self._maximize = bool(v)
        self._sync_hyper()

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
                f"weight_decay={self.weight_decay}, nesterov={self.nesterov}, "
                f"maximize={self.maximize})")

    def zero_grad(self):
        """Set the gradient of every parameter to zero."""
        for p in self.params:
            p.zero_grad()

    # -- the momentum-buffer rule (one place: step() and the compiled step)
    def _buffer(self, i):
        """(buffer, first) for parameter i's next update with momentum: a new buffer
        (first=True: the update initialises it, buf = g) when there is none or it no longer
        fits the parameter (shape or dtype changed)."""
        buf = self._bufs[i]
        flat = self.params[i]._flat
        if buf is None or buf.shape[0] != flat.shape[0] or buf.dtype != flat.dtype:
            buf = self._bufs[i] = np.empty_like(flat)
            self._buffers_version += 1
            return buf, True
        return buf, False

    def _prepare_buffers(self):
        if self._momentum == 0:
            return [None] * len(self.params), [False] * len(self.params)
        pairs = [self._buffer(i) for i in range(len(self.params))]
        return [b for b, _ in pairs], [f for _, f in pairs]

    def _drop_buffers(self, indices):
        for i in indices:
            self._bufs[i] = None
        self._buffers_version += 1

    def _count_steps(self, n):
        self.steps += n

    def step(self):
        """Update every parameter from its gradient (one fused kernel call each)."""
        lr, mom, damp, wd, nesterov, maximize = self._hyper
        for i, p in enumerate(self.params):
            p._materialize_grad()        # no gradient since zero_grad(): it is zero
            if mom != 0:
                buf, first = self._buffer(i)
            else:
                buf, first = _EMPTY[p._flat.dtype], False
            _SGD[p._flat.dtype](p._flat, p._gflat, buf, lr, mom, damp, wd, nesterov, maximize,
                                first)
        self._count_steps(1)

    def state_dict(self):
        """Hyperparameters, step count and copies of the momentum buffers (None for a
        parameter without one yet)."""
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov,
                "maximize": self.maximize, "steps": self.steps,
                "momentum_buffers": [None if b is None else b.reshape(p.shape).copy()
                                     for b, p in zip(self._bufs, self.params)]}

    def load_state_dict(self, state):
        """Restore a state_dict() of an SGD over parameters of the same shapes and dtypes;
        everything is checked before anything changes."""
        who = "SGD.load_state_dict"
        if not isinstance(state, dict):
            raise TypeError(f"{who}: expected a dict, got {type(state).__name__}")
        keys = {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize",
                "steps", "momentum_buffers"}
        if set(state) != keys:
            raise KeyError(f"{who}: missing keys {sorted(keys - set(state))}, unexpected "
                           f"keys {sorted(set(state) - keys)}")
        hyper = {k: _hyper(who, k, state[k]) for k in
                 ("lr", "momentum", "dampening", "weight_decay")}
        bufs = list(state["momentum_buffers"])
        if len(bufs) != len(self.params):
            raise ValueError(f"{who}: {len(bufs)} momentum buffers for {len(self.params)} "
                             "parameters")
        new = []
        for i, (b, p) in enumerate(zip(bufs, self.params)):
            if b is None:
                new.append(None)
                continue
            if not isinstance(b, np.ndarray) or b.shape != p.shape or b.dtype != p.dtype:
                got = (f"shape {b.shape}, dtype {b.dtype}" if isinstance(b, np.ndarray)
                       else type(b).__name__)
                raise ValueError(f"{who}: momentum buffer {i} must have shape {p.shape} and "
                                 f"dtype {p.dtype}, got {got}")
            new.append(np.array(b, order="C", copy=True).reshape(-1))
        nesterov, maximize = bool(state["nesterov"]), bool(state["maximize"])
        if nesterov and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(f"{who}: nesterov momentum requires momentum > 0 and "
                             "dampening == 0")
        self._lr, self._momentum = hyper["lr"], hyper["momentum"]
        self._dampening, self._weight_decay = hyper["dampening"], hyper["weight_decay"]
        self._nesterov, self._maximize = nesterov, maximize
        self.steps = int(state["steps"])
        self._bufs = new
        self._buffers_version += 1
        self._sync_hyper()


_EMPTY = EMPTY1
_SGD = specialized(_ko._sgd)
