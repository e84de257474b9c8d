"""Numerical gradient checking (CS231n's gradient check, PyTorch's gradcheck tolerances)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .losses import Loss
from .nn import Module
from ._typing import Array

__all__ = ["gradcheck", "numerical_gradient", "GradcheckError", "GradcheckReport"]


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with central differences, or is not deterministic."""


class GradcheckReport:
    """Per checked tensor: name, shape, max absolute and max relative error (relative to
    max(|numerical|, 1e-12)).  ``passed`` is True when every element was within tolerance;
    ``str(report)`` is a table.

    Parameters
    ----------
    entries : list of dict
        One per checked tensor ("name", "shape", "max_abs_err", "max_rel_err").
    eps, atol, rtol : float
        The settings of the check.
    """

    def __init__(self, entries: list[dict[str, Any]], eps: float, atol: float,
                 rtol: float) -> None:
        self.entries = entries
        self.eps, self.atol, self.rtol = eps, atol, rtol
        self.passed = True

    def __bool__(self) -> bool:
        return self.passed

    def __getitem__(self, name: str) -> dict[str, Any]:
        for e in self.entries:
            if e["name"] == name:
                return e
        raise KeyError(name)

    def __str__(self) -> str:
        lines = [f"gradcheck: eps={self.eps:g}, pass when |a - n| <= {self.atol:g} + "
                 f"{self.rtol:g} * |n|",
                 f"{'tensor':<24} {'shape':<16} {'max abs err':>12} {'max rel err':>12}"]
        for e in self.entries:
            lines.append(f"{e['name']:<24} {str(e['shape']):<16} {e['max_abs_err']:>12.3e} "
                         f"{e['max_rel_err']:>12.3e}")
        return "\n".join(lines)

    __repr__ = __str__


def numerical_gradient(f: Callable[[Array], float], x: Array, h: float = 1e-5) -> Array:
    """Central-difference gradient of the scalar function f at x: for each element,
    (f(x + h e_i) - f(x - h e_i)) / (2h).  x (a float ndarray) is perturbed in place and
    restored; f is called 2 * x.size times with x as its argument.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``.
    x : numpy.ndarray
        A writable floating-point array (perturbed in place, then restored).
    h : float, optional
        The step (> 0).

    Returns
    -------
    numpy.ndarray
        The float64 gradient, of x's shape.
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(f"numerical_gradient: x must be a floating-point numpy.ndarray, got "
                        f"{type(x).__name__}" + (f" of dtype {x.dtype}"
                                                 if isinstance(x, np.ndarray) else ""))
    if not x.flags.writeable:
        raise ValueError("numerical_gradient: x must be writable (it is perturbed in place)")
    h = float(h)
    if not h > 0:
        raise ValueError(f"numerical_gradient: h must be > 0, got {h}")
    grad = np.zeros(x.shape, np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        try:
            x[ix] = old + h
            fp = float(f(x))
            x[ix] = old - h
            fm = float(f(x))
        finally:
            x[ix] = old
        grad[ix] = (fp - fm) / (2 * h)
        it.iternext()
    return grad.astype(x.dtype, copy=False)


def _need_f64(what, a):
    if a.dtype != np.float64:
        raise TypeError(f"gradcheck: {what} has dtype {a.dtype}; gradcheck runs in float64 "
                        "(pass float64 inputs and convert the module with .double())")


def _copy_out(g):
    if g is None:
        return None
    if isinstance(g, np.ndarray):
        return g.copy()
    if isinstance(g, dict):
        return {k: _copy_out(v) for k, v in g.items()}
    return [_copy_out(v) for v in g]


def _as_list(g, n):
    if isinstance(g, dict):
        g = list(g.values())
    if isinstance(g, np.ndarray) or g is None:
        g = [g]
    g = list(g)
    if len(g) != n:
        raise GradcheckError(f"gradcheck: backward returned {len(g)} input gradients for "
                             f"{n} inputs")
    return g


def gradcheck(target: Any, *inputs: Any, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, seed: int = 0) -> GradcheckReport:
    """Check analytic gradients against float64 central differences.

    ``target`` is one of:
      * a Module: checks the gradients w.r.t. its float inputs and every parameter of the
        scalar ``sum(forward(*inputs) * R)`` (R a fixed random array, so every output
        element counts); backward receives R (a list of them for several outputs) and
        returns the input gradients: an array, a tuple/list, or a dict in input order (a
        Graph's ``{name: gradient}``);
      * a Loss: ``target(pred, labels_or_target)``; checks the gradient w.r.t. pred;
      * a callable ``fn(*inputs) -> (value, grads)`` returning a scalar and one analytic
        gradient per input (None for an input without one), e.g. a hand-written gate.

    Float inputs and parameters must be float64; integer inputs (labels) are passed
    through unchecked.  The analytic pass runs twice and must agree bitwise.  An element
    passes when |analytic - numerical| <= atol + rtol * |numerical|.

    Returns a GradcheckReport (max abs / rel error per tensor); raises GradcheckError naming
    the tensor and the index of the first failing element.

    Parameters
    ----------
    target : Module, Loss or callable
        What to check (see above).
    *inputs : numpy.ndarray
        The inputs (float64, or integer labels).
    eps : float, optional
        The central-difference step.
    atol, rtol : float, optional
        The tolerances of the pass rule.
    seed : int, optional
        Seed of the random output weights R.

    Returns
    -------
    GradcheckReport
        True in a boolean context when every element passed.

    Raises
    ------
    GradcheckError
        At the first element outside the tolerance.
    """
    eps, atol, rtol = float(eps), float(atol), float(rtol)
    if not eps > 0:
        raise ValueError(f"gradcheck: eps must be > 0, got {eps}")
    xs = []
    for i, a in enumerate(inputs):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"gradcheck: input {i} must be a numpy.ndarray, got "
                            f"{type(a).__name__}")
        if a.dtype.kind == "f":
            _need_f64(f"input {i}", a)
        xs.append(np.array(a, copy=True))
    diff = [i for i, a in enumerate(xs) if a.dtype.kind == "f"]

    if isinstance(target, Module):
        module = target
        params = list(module.named_parameters())
        for name, p in params:
            _need_f64(f"parameter {name!r}", p.data)
        was_training = module.training
        Rs = []

        def analytic():
            module.train()
            module.zero_grad()
            module(*xs)
            g = module.backward(Rs[0] if len(Rs) == 1 else list(Rs))
            return (_as_list(_copy_out(g), len(xs)),
                    [p.grad.copy() for _, p in params])

        def value():
            o = module(*xs)
            o = o if isinstance(o, (tuple, list)) else [o]
            return float(sum(np.sum(oi * r) for oi, r in zip(o, Rs)))

        try:
            module.train()
            out0 = module(*xs)
            outs = out0 if isinstance(out0, (tuple, list)) else [out0]
            rng = np.random.default_rng(seed)
            Rs.extend(rng.standard_normal(o.shape) for o in outs)
            (gin1, gp1), (gin2, gp2) = analytic(), analytic()
            module.eval()
            checks = [(f"input {i}", xs[i], gin1[i], gin2[i]) for i in diff]
            checks += [(name, p.data, a1, a2)
                       for (name, p), a1, a2 in zip(params, gp1, gp2)]
            return _compare(checks, value, eps, atol, rtol)
        finally:
            module.train(was_training)
            module.zero_grad()

    if isinstance(target, Loss):
        if len(xs) != 2:
            raise TypeError(f"gradcheck: a loss takes (pred, target), got {len(xs)} inputs")

        def analytic():
            target(*xs)
            return target.backward().copy()

        a1, a2 = analytic(), analytic()
        return _compare([("pred", xs[0], a1, a2)], lambda: target(*xs), eps, atol, rtol)

    if callable(target):
        def analytic():
            res = target(*xs)
            if not (isinstance(res, tuple) and len(res) == 2):
                raise TypeError("gradcheck: a function must return (value, grads)")
            return _as_list(_copy_out(res[1]), len(xs))

        g1, g2 = analytic(), analytic()
        checks = [(f"input {i}", xs[i], g1[i], g2[i]) for i in diff if g1[i] is not None]
        return _compare(checks, lambda: target(*xs)[0], eps, atol, rtol)

    raise TypeError(f"gradcheck: expected a Module, a Loss or a callable, got "
                    f"{type(target).__name__}")


def _compare(checks, value, eps, atol, rtol):
    entries = []
    for name, x, a1, a2 in checks:
        if a1 is None:
            raise GradcheckError(f"gradcheck: no analytic gradient for {name}")
        a1, a2 = np.asarray(a1), np.asarray(a2)
        if a1.shape != x.shape:
            raise GradcheckError(f"gradcheck: the analytic gradient of {name} has shape "
                                 f"{a1.shape}, the tensor has {x.shape}")
        if not np.array_equal(a1, a2):
            bad = np.unravel_index(int(np.flatnonzero(a1 != a2)[0]), a1.shape)
            raise GradcheckError(f"gradcheck: backward is not deterministic for {name}: two "
                                 f"runs differ at index {bad} ({a1[bad]!r} vs {a2[bad]!r})")
        num = numerical_gradient(lambda _: value(), x, eps)
        err = np.abs(a1 - num)
        ok = err <= atol + rtol * np.abs(num)
        rel = err / np.maximum(np.abs(num), 1e-12)
        entries.append({"name": name, "shape": x.shape,
                        "max_abs_err": float(err.max()) if err.size else 0.0,
                        "max_rel_err": float(rel.max()) if rel.size else 0.0})
        if not ok.all():
            bad = np.unravel_index(int(np.flatnonzero(~ok)[0]), x.shape)
            raise GradcheckError(
                f"gradcheck: gradient of {name} is wrong at index {bad}: analytic "
                f"{a1[bad]:.10g}, numerical {num[bad]:.10g} (abs error {err[bad]:.3g} > "
                f"{atol:g} + {rtol:g} * |numerical|)")
    return GradcheckReport(entries, eps, atol, rtol)
