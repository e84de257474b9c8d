"""Adam and AdamW, as torch.optim.Adam / AdamW (the single-tensor path torch runs on the CPU)."""
from __future__ import annotations

from .. import _checks as C
from .._kernels._core import OptKind
from .optimizer import _HyperOptimizer, hyperparameter
from .._typing import ParamsLike

__all__ = ["Adam", "AdamW"]


class Adam(_HyperOptimizer):
    """Adam (Kingma & Ba), as torch.optim.Adam, one fused kernel call per parameter.

    For each parameter p with gradient g, step t (1, 2, ...) does::

        g = -g if maximize else g
        g = g + weight_decay * p                        (Adam: L2 added to the gradient)
        m = m + (1 - beta1) * (g - m)                   exp_avg.lerp_(g, 1 - beta1)
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v); v_hat = vmax if amsgrad else v
        p = p - lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)

    m, v (and vmax) start at zero.  scikit-learn's Adam differs: it folds its L2 term
    ``alpha`` into the gradient as ``alpha / n_samples * W`` and never decays biases, and it
    applies eps outside the bias correction (``lr_t * m / (sqrt(v) + eps)`` with
    ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``), so its steps differ slightly.

    ``lr``, ``betas``, ``eps``, ``weight_decay``, ``amsgrad`` and ``maximize`` may be changed
    between steps; the state (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) is kept
    per parameter, and ``steps`` is the t of the last update.

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to update.
    lr : float, optional
        Learning rate (>= 0).
    betas : (float, float), optional
        The decay rates of the first and second moment estimates, each in [0, 1).
    eps : float, optional
        Added to the denominator (>= 0).
    weight_decay : float, optional
        L2 penalty added to the gradient; default 0 (>= 0).
    amsgrad : bool, optional
        Use the running maximum of the second moment (AMSGrad).
    maximize : bool, optional
        Ascend the objective instead of descending.
    """
    _kind = OptKind.ADAM
    _hyper_names = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _hyper_checks = {"lr": C.real, "betas": C.betas, "eps": C.real, "weight_decay": C.real,
                     "amsgrad": C.flag, "maximize": C.flag}
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    lr = hyperparameter("lr", "learning rate (>= 0)")
    betas = hyperparameter("betas", "(beta1, beta2), each in [0, 1)")
    eps = hyperparameter("eps", "added to the bias-corrected sqrt(v) (>= 0)")
    weight_decay = hyperparameter("weight_decay", "L2 weight decay (>= 0)")
    amsgrad = hyperparameter("amsgrad", "use the running maximum of v")
    maximize = hyperparameter("maximize", "ascend instead of descend")

    def __init__(self, params: ParamsLike, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def _kernel_hyper(self):
        b1, b2 = self._betas
        return (self._lr, b1, b2, self._eps, self._weight_decay, self._amsgrad,
                self._maximize)

    def _needed(self):
        return (True, True, self._amsgrad)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter), as torch.optim.AdamW: Adam with decoupled weight decay.
    The step is Adam's with ``weight_decay`` taken out of the gradient and applied to the
    parameter first, ``p = p * (1 - lr * weight_decay)``.  Default weight_decay 1e-2.

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to update.
    lr : float, optional
        Learning rate (>= 0).
    betas : (float, float), optional
        The decay rates of the first and second moment estimates, each in [0, 1).
    eps : float, optional
        Added to the denominator (>= 0).
    weight_decay : float, optional
        Decoupled weight decay, applied to the parameter; default 1e-2 (>= 0).
    amsgrad : bool, optional
        Use the running maximum of the second moment (AMSGrad).
    maximize : bool, optional
        Ascend the objective instead of descending.
    """
    _kind = OptKind.ADAMW

    def __init__(self, params: ParamsLike, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
