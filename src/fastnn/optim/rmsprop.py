"""RMSprop, as torch.optim.RMSprop (the single-tensor path torch runs on the CPU)."""
from __future__ import annotations

from .. import _checks as C
from .._kernels._core import OptKind
from .optimizer import _HyperOptimizer, hyperparameter
from .._typing import ParamsLike

__all__ = ["RMSprop"]


class RMSprop(_HyperOptimizer):
    """RMSprop (Hinton), as torch.optim.RMSprop, one fused kernel call per parameter.

    For each parameter p with gradient g, one step does::

        g = -g if maximize else g
        g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g * g
        a = a + (1 - alpha) * (g - a);  d = sqrt(s - a * a) + eps     (centered)
        d = sqrt(s) + eps                                             (otherwise)
        buf = momentum * buf + g / d;  p = p - lr * buf               (momentum > 0)
        p = p - lr * g / d                                            (otherwise)

    s, a and buf start at zero (``square_avg``, ``grad_avg``, ``momentum_buffer``).  Every
    hyperparameter may be changed between steps.

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to update.
    lr : float, optional
        Learning rate (>= 0).
    alpha : float, optional
        Smoothing constant of the squared gradients (>= 0).
    eps : float, optional
        Added to the denominator (>= 0).
    weight_decay : float, optional
        L2 penalty added to the gradient (>= 0).
    momentum : float, optional
        Momentum factor (>= 0).
    centered : bool, optional
        Normalize by an estimate of the gradient's variance.
    maximize : bool, optional
        Ascend the objective instead of descending.
    """
    _kind = OptKind.RMSPROP
    _hyper_names = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    _hyper_checks = {"lr": C.real, "alpha": C.real, "eps": C.real, "weight_decay": C.real,
                     "momentum": C.real, "centered": C.flag, "maximize": C.flag}
    _state_names = ("square_avg", "grad_avg", "momentum_buffer")

    lr = hyperparameter("lr", "learning rate (>= 0)")
    alpha = hyperparameter("alpha", "smoothing constant of the squared gradients (>= 0)")
    eps = hyperparameter("eps", "added to the root mean square (>= 0)")
    weight_decay = hyperparameter("weight_decay", "L2 weight decay (>= 0)")
    momentum = hyperparameter("momentum", "momentum factor (>= 0)")
    centered = hyperparameter("centered", "normalise by the estimated variance")
    maximize = hyperparameter("maximize", "ascend instead of descend")

    def __init__(self, params: ParamsLike, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize)

    def _kernel_hyper(self):
        return (self._lr, self._alpha, self._eps, self._weight_decay, self._momentum,
                self._centered, self._maximize)

    def _needed(self):
        return (True, self._centered, self._momentum > 0)
