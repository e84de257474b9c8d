"""Parameter: a trainable array and its gradient, with the lazy-zero protocol.

``zero_grad()`` is O(1): it marks the gradient *stale* (logically zero) instead of filling
it.  Whoever writes a gradient asks the parameter first (``_claim_grad``): a stale gradient
is overwritten, a live one is added to.  Whoever reads one (``grad``, an optimizer)
materializes it (``_materialize_grad``).  Nothing outside this class touches the flag.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .._checks import DTYPES
from .._typing import Array, ArrayLike, DTypeLike

__all__ = ["Parameter"]


class Parameter:
    """A trainable array: ``data`` (C-contiguous float32/float64) and ``grad`` (same shape
    and dtype, always an array; zero until a backward pass adds into it).

    ``p.data = a`` and ``p.grad = a`` copy ``a`` into the existing arrays (same shape
    required), so optimizers and compiled steps that hold the arrays stay valid.

    Parameters
    ----------
    data : array_like
        The initial values (float32 or float64; copied).
    """
    __slots__ = ("_data", "_grad", "_stale", "_flat", "_gflat", "__weakref__")

    def __init__(self, data: ArrayLike) -> None:
        data = np.asarray(data)
        if data.dtype not in DTYPES:
            raise TypeError(f"Parameter: data must have dtype float32 or float64, got "
                            f"{data.dtype}")
        self._set_arrays(np.array(data, order="C", copy=True))

    def _set_arrays(self, data):
        self._data = data
        self._grad = np.empty_like(data)
        self._stale = True      # grad holds stale values that are logically zero
        # 1-D views of data and grad: what the kernels (optimizers, compiled step) update
        self._flat = data.reshape(-1)
        self._gflat = self._grad.reshape(-1)

    # -- the lazy-zero protocol
    def zero_grad(self) -> None:
        """Make the gradient zero (in O(1): the next backward overwrites it)."""
        self._stale = True

    def _claim_grad(self):
        """Called by a kernel's caller about to write this step's gradient: True when it
        must add into the gradient array (it holds a gradient since zero_grad), False when
        it may overwrite it.  Afterwards the gradient counts as written."""
        acc = not self._stale
        self._stale = False
        return acc

    def _materialize_grad(self):
        """The gradient array with its logical value (zero-filled if stale)."""
        if self._stale:
            self._grad.fill(0)
            self._stale = False
        return self._grad

    def _set_written(self, written):
        """After a compiled step: the gradient array holds that step's gradient (True), or
        nothing valid (False: the step was aborted, the gradient reads as zero)."""
        self._stale = not written

    # -- arrays
    @property
    def data(self) -> Array:
        return self._data

    @data.setter
    def data(self, value: ArrayLike) -> None:
        value = np.asarray(value)
        if value.shape != self._data.shape:
            raise ValueError(f"Parameter: cannot assign data of shape {value.shape} to a "
                             f"parameter of shape {self._data.shape}")
        if value.dtype not in DTYPES:
            raise TypeError(f"Parameter: data must have dtype float32 or float64, got "
                            f"{value.dtype}")
        np.copyto(self._data, value, casting="same_kind")

    @property
    def grad(self) -> Array:
        return self._materialize_grad()

    @grad.setter
    def grad(self, value: ArrayLike | None) -> None:
        if value is None:
            self._stale = True
            return
        value = np.asarray(value)
        if value.shape != self._data.shape:
            raise ValueError(f"Parameter: cannot assign a gradient of shape {value.shape} to "
                             f"a parameter of shape {self._data.shape}")
        np.copyto(self._grad, value, casting="same_kind")
        self._stale = False

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._data.dtype

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def numpy(self) -> Array:
        return self._data

    def __array__(self, dtype: DTypeLike = None, copy: bool | None = None) -> Array:
        if dtype is not None and np.dtype(dtype) != self._data.dtype:
            if copy is False:
                raise ValueError(f"Parameter: converting {self._data.dtype} to "
                                 f"{np.dtype(dtype)} needs a copy (copy=False given)")
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def __repr__(self) -> str:
        return f"Parameter(shape={self._data.shape}, dtype={self._data.dtype})"

    def _convert(self, dtype):
        self._set_arrays(self._data.astype(dtype, order="C"))


def set_written(params: Iterable[Parameter], written: bool) -> None:
    """Parameter._set_written for many parameters in one call (the compiled step's per-call
    bookkeeping: one Python call instead of one per parameter)."""
    stale = not written
    for p in params:
        p._stale = stale

