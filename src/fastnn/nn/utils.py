"""Gradient clipping with the names and semantics of ``torch.nn.utils``:
``clip_grad_norm_`` and ``clip_grad_value_``.

The kernels are in ``fastnn/_kernels/clip.pyx``: the norm is reduced in float64 over
fixed-size chunks added in chunk order, so it is bitwise identical for any thread count,
and the compiled step's ``clip_grad_norm=`` option (``fastnn.compile_step``,
``fastnn.Trainer``) calls the same kernels in the same order.
"""
from __future__ import annotations

import math
import warnings

from .. import _checks
from .._kernels import clip as _kc
from .._typing import ParamsLike

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

_CLAMP = _checks.specialized(_kc._clamp)


def _grads(params):
    # the flat gradient of each parameter, with its logical value (a gradient not written
    # since zero_grad() is zero: the lazy-zero protocol fills it now)
    for p in params:
        p._materialize_grad()
    return [p._gflat for p in params]


def clip_grad_norm_(parameters: ParamsLike, max_norm: float, norm_type: float | str = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale the gradients of ``parameters`` in place so that their total ``norm_type``-norm
    is at most ``max_norm``; returns the total norm before clipping, as a float.

    As ``torch.nn.utils.clip_grad_norm_``: the total norm is the norm of the vector of each
    gradient's norm (= the norm of all gradients concatenated); ``norm_type`` is a real
    number > 0 or ``inf`` (max |g|); each gradient is multiplied by
    ``coef = max_norm / (total_norm + 1e-6)`` when ``coef < 1`` (torch multiplies by
    ``min(coef, 1)``: the same result), so a NaN total norm makes every gradient NaN and an
    infinite one makes them 0 (NaN where infinite), unless ``error_if_nonfinite=True``,
    which raises a RuntimeError before anything changes.

    ``parameters``: a Parameter or an iterable of them (``model.parameters()``,
    ``optimizer.params``).  A gradient not written since ``zero_grad()`` counts as zero.

    Differences from torch: the total norm is returned as a Python float (torch: a 0-d
    tensor); it is accumulated in float64 for float32 gradients too (torch accumulates in
    float32), and the coefficient is computed in float64 and rounded to the gradient's
    dtype for the multiply; an empty gradient has inf-norm 0 (torch raises); a parameter
    listed twice, a negative ``max_norm`` and ``norm_type <= 0`` are errors (torch would
    scale it twice, flip the gradients, compute a 0-"norm").  The result does not depend on
    the thread count (bitwise).

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
        The parameters whose gradients are clipped.
    max_norm : float
        The largest allowed total norm (>= 0).
    norm_type : float, optional
        The norm's order (> 0, or ``inf``); default 2.
    error_if_nonfinite : bool, optional
        Raise a RuntimeError when the total norm is NaN or infinite.

    Returns
    -------
    float
        The total norm of the gradients before clipping.
    """
    who = "clip_grad_norm_"
    params, empty_generator = _checks.grad_parameters(who, parameters)
    max_norm = _checks.nonneg_bound(who, "max_norm", max_norm)
    p = _checks.norm_type(who, norm_type)
    if empty_generator:
        warnings.warn("clip_grad_norm_: `parameters` is an empty generator, no gradient "
                      "clipping will occur.", stacklevel=2)
    grads = _grads(params)
    total = _kc._total_norm(grads, p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {p} of the gradients of `parameters` "
            f"is {total}, so they cannot be clipped; pass error_if_nonfinite=False to scale "
            "them by the non-finite norm anyway")
    _kc._clip_scale(grads, _kc._clip_coef(max_norm, total))
    return total


def clip_grad_value_(parameters: ParamsLike, clip_value: float) -> None:
    """Clamp every gradient of ``parameters`` in place to ``[-clip_value, clip_value]``
    (``torch.nn.utils.clip_grad_value_``: returns None; NaN stays NaN).

    ``clip_value`` must be a real number >= 0 (``inf``: nothing changes); torch also takes
    a negative one, which sets every gradient to it.  Bounds are rounded to the gradient's
    dtype.  A gradient not written since ``zero_grad()`` counts as zero.

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
        The parameters whose gradients are clamped.
    clip_value : float
        The bound (>= 0).
    """
    who = "clip_grad_value_"
    params, _ = _checks.grad_parameters(who, parameters)
    c = _checks.nonneg_bound(who, "clip_value", clip_value)
    for g in _grads(params):
        _CLAMP[g.dtype](g, -c, c)
