"""SGD, as torch.optim.SGD."""
from __future__ import annotations

from typing import Any

from .._checks import real
from .._kernels._core import OptKind
from .._typing import ParamsLike
from .optimizer import Optimizer, check_buffers, check_state_keys

__all__ = ["SGD"]


class SGD(Optimizer):
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

    The compiled training step (fastnn.training.compiled) runs the same update through the
    ``Optimizer`` contract: ``_hyper`` is (lr, momentum, dampening, weight_decay, nesterov,
    maximize), the state one momentum buffer per parameter (none while momentum is 0).

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to update (e.g. ``model.parameters()``).
    lr : float
        Learning rate (>= 0).
    momentum : float, optional
        Momentum factor (>= 0); 0 keeps no buffer.
    dampening : float, optional
        Dampening of the momentum.
    weight_decay : float, optional
        L2 penalty added to the gradient (>= 0).
    nesterov : bool, optional
        Nesterov momentum (needs momentum > 0 and dampening 0).
    maximize : bool, optional
        Ascend the objective instead of descending.
    """
    _kind = OptKind.SGD
    _state_names = ("momentum_buffers",)      # the state_dict key of the one buffer

    def __init__(self, params: ParamsLike, lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        who = "SGD"
        super().__init__(params)
        self._lr = real(who, "lr", lr)
        self._momentum = real(who, "momentum", momentum)
        self._dampening = real(who, "dampening", dampening)
        self._nesterov = False
        self._maximize = bool(maximize)
        self.weight_decay = weight_decay
        self.nesterov = nesterov

    def _sync_hyper(self):
        self._hyper = (self._lr, self._momentum, self._dampening, self._weight_decay,
                       float(self._nesterov), float(self._maximize))

    # hyperparameters are validated when set, so step() need not check them
    def _check_nesterov(self, nesterov, momentum, dampening):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and "
                             "dampening == 0")

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, v: float) -> None:
        self._lr = real("SGD", "lr", v)
        self._sync_hyper()

    @property
    def momentum(self) -> float:
        return self._momentum

    @momentum.setter
    def momentum(self, v: float) -> None:
        v = real("SGD", "momentum", v)
        self._check_nesterov(self._nesterov, v, self._dampening)
        if (v == 0) != (self._momentum == 0):
            self._state_version += 1         # the update starts / stops using its buffer
        self._momentum = v
        self._sync_hyper()

    @property
    def dampening(self) -> float:
        return self._dampening

    @dampening.setter
    def dampening(self, v: float) -> None:
        v = real("SGD", "dampening", v)
        self._check_nesterov(self._nesterov, self._momentum, v)
        self._dampening = v
        self._sync_hyper()

    @property
    def weight_decay(self) -> float:
        return self._weight_decay

    @weight_decay.setter
    def weight_decay(self, v: float) -> None:
        self._weight_decay = real("SGD", "weight_decay", v)
        self._sync_hyper()

    @property
    def nesterov(self) -> bool:
        return self._nesterov

    @nesterov.setter
    def nesterov(self, v: bool) -> None:
        v = bool(v)
        self._check_nesterov(v, self._momentum, self._dampening)
        self._nesterov = v
        self._sync_hyper()

    @property
    def maximize(self) -> bool:
        return self._maximize

    @maximize.setter
    def maximize(self, v: bool) -> None:
        self._maximize = bool(v)
        self._sync_hyper()

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
                f"weight_decay={self.weight_decay}, nesterov={self.nesterov}, "
                f"maximize={self.maximize})")

    # -- the momentum-buffer rule (one place: step() and the compiled step)
    def _state_for(self, i):
        """(buffers, new) for parameter i's next update: (None,) while momentum is 0; else its
        momentum buffer, a new one (new=True: the update initialises it, buf = g) when there
        is none or it no longer fits the parameter (shape or dtype changed)."""
        if self._momentum == 0:
            return (None,), False
        if self._fits(i):
            return self._state[i], False
        return self._new_state(i, 1), True

    @property
    def _bufs(self):
        """The momentum buffers (None for a parameter without one yet)."""
        return [None if st is None else st[0] for st in self._state]

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters, step count and copies of the momentum buffers (None for a
        parameter without one yet)."""
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov,
                "maximize": self.maximize, "steps": self.steps,
                "momentum_buffers": [None if b is None else b.reshape(p.shape).copy()
                                     for b, p in zip(self._bufs, self.params)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict() of an SGD over parameters of the same shapes and dtypes;
        everything is checked before anything changes."""
        who = "SGD.load_state_dict"
        check_state_keys(who, state, {"lr", "momentum", "dampening", "weight_decay",
                                      "nesterov", "maximize", "steps", "momentum_buffers"})
        hyper = {k: real(who, k, state[k]) for k in
                 ("lr", "momentum", "dampening", "weight_decay")}
        bufs = list(state["momentum_buffers"])
        if len(bufs) != len(self.params):
            raise ValueError(f"{who}: {len(bufs)} momentum buffers for {len(self.params)} "
                             "parameters")
        new = check_buffers(who, bufs, self.params, lambda i: f"momentum buffer {i}")
        nesterov, maximize = bool(state["nesterov"]), bool(state["maximize"])
        if nesterov and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(f"{who}: nesterov momentum requires momentum > 0 and "
                             "dampening == 0")
        self._lr, self._momentum = hyper["lr"], hyper["momentum"]
        self._dampening, self._weight_decay = hyper["dampening"], hyper["weight_decay"]
        self._nesterov, self._maximize = nesterov, maximize
        self.steps = int(state["steps"])
        self._state = [None if b is None else (b,) for b in new]
        self._state_version += 1
        self._sync_hyper()
