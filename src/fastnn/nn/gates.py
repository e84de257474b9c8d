"""The gates of a computational graph: ``Add``, ``Multiply``, ``Maximum``, ``Concat`` and
``Split`` -- the add gate distributes the gradient, the max gate routes it, the multiply gate
swaps its inputs.  Parameter-free modules that keep their per-use state in the ``Ctx`` they
are handed, so one gate may be used at several places of a Graph.  Their kernels are
compiled (fastnn/_kernels/gates.pyx).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import _checks as C
from .._kernels import gates as _gates
from .._kernels._core import GateOp
from .module import Module, buf, not_run

__all__ = ["Add", "Multiply", "Maximum", "Concat", "Split"]

_BIN_FWD = C.specialized(_gates._binary_forward)
_BIN_BWD = C.specialized(_gates._binary_backward)
_COPY = C.specialized(_gates._copy_rows)


# --------------------------------------------------------------------------------- gates
class _Gate(Module):
    """A parameter-free module of the graph.  ``_fwd(ctx, inputs, training)`` and
    ``_bwd(ctx, grad_out, input_grad)`` keep their state in the `ctx` they are given, so one
    gate may be used at several places of a Graph (each use has its own ctx)."""
    _arity = None        # the number of inputs, None for any number >= 1

    def _who(self):
        return repr(self)

    def _arch(self):
        return {}

    def _n_outputs(self):
        return 1

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        return self._fwd(self._ctx, inputs, self.training)

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        """The gradients w.r.t. the inputs: one array for a one-input gate, else a tuple
        (None when input_grad is False)."""
        gs = self._bwd(self._ctx, grad_out, input_grad)
        if gs is None:
            return None
        return gs[0] if len(gs) == 1 else tuple(gs)

    def _inputs(self, xs):
        who = self._who
        if self._arity is not None and len(xs) != self._arity:
            raise TypeError(f"{who()}: takes {self._arity} inputs, got {len(xs)}")
        if not xs:
            raise TypeError(f"{who()}: takes at least one input, got none")
        out = [C.module_array(who, f"input {k}", x) for k, x in enumerate(xs)]
        dt = out[0].dtype
        for k, x in enumerate(out[1:], 1):
            if x.dtype != dt:
                raise TypeError(f"{who()}: input {k} has dtype {x.dtype} but input 0 has {dt}; "
                                f"convert one of them (e.g. .astype(np.{dt}))")
        return out

    def _grad_out(self, grad_out, dtype, shape):
        return C.same_shape(self._who, "grad_out",
                            C.module_array(self._who, "grad_out", grad_out, dtype), shape)


class _Binary(_Gate):
    """An elementwise gate of two inputs of one shape (no broadcasting)."""
    _arity = 2
    _op = int(GateOp.ADD)
    _keeps_inputs = True     # multiply / maximum read both inputs in backward

    def _fwd(self, ctx, xs, training):
        a, b = self._inputs(xs)
        if a.shape != b.shape:
            raise ValueError(f"{self._who()}: the inputs must have the same shape (no "
                             f"broadcasting), got {a.shape} and {b.shape}")
        shape, dt = a.shape, a.dtype
        a2, b2 = C.as_rows(a), C.as_rows(b)
        if training:
            out = buf(ctx, "out", a2.shape, dt, a2, b2)
        else:
            out = np.empty(a2.shape, dt)
        _BIN_FWD[dt](a2, b2, out, self._op)
        if training:
            ctx.x = (a2, b2) if self._keeps_inputs else None
            ctx.y = out
            ctx.shape = shape
        return out.reshape(shape) if out.shape != shape else out

    def _bwd(self, ctx, grad_out, input_grad):
        y = ctx.y
        if y is None:
            raise not_run(self._who)
        g = self._grad_out(grad_out, y.dtype, ctx.shape)
        if not input_grad:
            return None
        g2 = C.as_rows(g)
        a2, b2 = ctx.x
        ga = buf(ctx, "ga", y.shape, y.dtype, g2, a2, b2)
        gb = buf(ctx, "gb", y.shape, y.dtype, g2, a2, b2)
        _BIN_BWD[y.dtype](g2, a2, b2, ga, gb, self._op, True, True)
        if y.shape != ctx.shape:
            return [ga.reshape(ctx.shape), gb.reshape(ctx.shape)]
        return [ga, gb]


class Add(_Binary):
    """y = a + b (elementwise, same shapes).  Backward distributes: both inputs receive
    grad_out itself (no copy)."""
    _op = int(GateOp.ADD)
    _keeps_inputs = False

    def _bwd(self, ctx, grad_out, input_grad):
        if ctx.y is None:
            raise not_run(self._who)
        g = self._grad_out(grad_out, ctx.y.dtype, ctx.shape)
        return [g, g] if input_grad else None


class Multiply(_Binary):
    """y = a * b (elementwise, same shapes).  Backward swaps: da = dy * b, db = dy * a
    (both inputs are kept from the forward: do not modify them before backward)."""
    _op = int(GateOp.MUL)


class Maximum(_Binary):
    """y = max(a, b) (elementwise, same shapes).  Backward routes dy to the input that was
    chosen; a tie goes to the first input.  A NaN propagates (as numpy.maximum) and receives
    the gradient."""
    _op = int(GateOp.MAX)


def _axis(who, axis):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (1, -1):
        raise ValueError(f"{who}: only axis=1 (the columns of 2-D inputs) is supported, got "
                         f"axis={axis!r}")
    return 1


class Concat(_Gate):
    """y = the inputs side by side along axis 1: 2-D inputs (batch, n_k) of one dtype and
    batch give (batch, sum n_k).  Backward hands each input its block of columns.

    Parameters
    ----------
    axis : int, optional
        The axis to join along (1 or -1: the feature axis).
    """

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        object.__setattr__(self, "axis", _axis("Concat", axis))

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def _arch(self):
        return {"axis": self.axis}

    def _fwd(self, ctx, xs, training):
        xs = self._inputs(xs)
        who = self._who
        for k, x in enumerate(xs):
            if x.ndim != 2:
                raise ValueError(f"{who()}: input {k} must be 2-D (batch, features), got "
                                 f"shape {x.shape}")
            if x.shape[0] != xs[0].shape[0]:
                raise ValueError(f"{who()}: input {k} has {x.shape[0]} rows but input 0 has "
                                 f"{xs[0].shape[0]} (shapes {x.shape} and {xs[0].shape})")
        dt = xs[0].dtype
        widths = tuple(x.shape[1] for x in xs)
        shape = (xs[0].shape[0], sum(widths))
        xs = [C.rowmajor(x) for x in xs]
        if training:
            out = buf(ctx, "out", shape, dt, *xs)
        else:
            out = np.empty(shape, dt)
        copy = _COPY[dt]
        off = 0
        for x, n in zip(xs, widths):
            copy(x, out[:, off:off + n])
            off += n
        if training:
            ctx.x = widths
            ctx.y = out
            ctx.shape = shape
        return out

    def _bwd(self, ctx, grad_out, input_grad):
        y = ctx.y
        if y is None:
            raise not_run(self._who)
        g = C.rowmajor(self._grad_out(grad_out, y.dtype, ctx.shape))
        if not input_grad:
            return None
        copy = _COPY[y.dtype]
        gs, off = [], 0
        for k, n in enumerate(ctx.x):
            gk = buf(ctx, f"g{k}", (ctx.shape[0], n), y.dtype, g)
            copy(g[:, off:off + n], gk)
            gs.append(gk)
            off += n
        return gs


class Split(_Gate):
    """The columns of one 2-D input (batch, sum(sizes)) cut into blocks (batch, sizes[k]):
    several outputs.  In a Graph, ``g.add(Split([32, 32]), h)`` returns a tuple of nodes.
    Backward takes one gradient per output (a list; None for an unused output counts as
    zero) and returns the input's gradient.

    Parameters
    ----------
    sizes : sequence of int
        The width of each output (>= 1 each).
    axis : int, optional
        The axis to cut (1 or -1: the feature axis).
    """
    _arity = 1

    def __init__(self, sizes: Sequence[int], axis: int = 1) -> None:
        super().__init__()
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"Split: sizes must be a list of ints, got {sizes!r}") from None
        if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                            or s < 1 for s in sizes):
            raise ValueError(f"Split: sizes must be a non-empty list of ints >= 1, got {sizes!r}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        object.__setattr__(self, "axis", _axis("Split", axis))

    def extra_repr(self) -> str:
        return f"{list(self.sizes)}"

    def _arch(self):
        return {"sizes": list(self.sizes), "axis": self.axis}

    def _n_outputs(self):
        return len(self.sizes)

    def _fwd(self, ctx, xs, training):
        (x,) = self._inputs(xs)
        who = self._who
        total = sum(self.sizes)
        if x.ndim != 2 or x.shape[1] != total:
            raise ValueError(f"{who()}: input must be 2-D (batch, {total}) (the sizes sum to "
                             f"{total}), got shape {x.shape}")
        x = C.rowmajor(x)
        dt, m = x.dtype, x.shape[0]
        copy = _COPY[dt]
        outs, off = [], 0
        for k, n in enumerate(self.sizes):
            o = buf(ctx, f"out{k}", (m, n), dt, x) if training else np.empty((m, n), dt)
            copy(x[:, off:off + n], o)
            outs.append(o)
            off += n
        if training:
            ctx.y = tuple(outs)
            ctx.shape = x.shape
        return tuple(outs)

    def _bwd(self, ctx, grad_out, input_grad):
        ys = ctx.y
        if ys is None:
            raise not_run(self._who)
        who = self._who
        k = len(self.sizes)
        if isinstance(grad_out, np.ndarray) and k == 1:
            grad_out = [grad_out]
        if not isinstance(grad_out, (list, tuple)) or len(grad_out) != k:
            raise TypeError(f"{who()}: backward takes a list of {k} gradients (one per output, "
                            f"None for an unused one), got {type(grad_out).__name__}"
                            + (f" of length {len(grad_out)}"
                               if isinstance(grad_out, (list, tuple)) else ""))
        gs = [None if g is None else C.rowmajor(self._grad_out(g, y.dtype, y.shape))
              for g, y in zip(grad_out, ys)]
        if not input_grad:
            return None
        dt = ys[0].dtype
        gx = buf(ctx, "gx", ctx.shape, dt, *([g for g in gs if g is not None] or [ys[0]]))
        copy = _COPY[dt]
        off = 0
        for g, n in zip(gs, self.sizes):
            if g is None:
                gx[:, off:off + n] = 0
            else:
                copy(g, gx[:, off:off + n])
            off += n
        return [gx]


