"""Type aliases used in the annotations of the public API (``py.typed`` ships with the
package, so ``mypy --strict`` checks user code against them)."""
from __future__ import annotations

import os
from typing import Any, Iterable, Union

import numpy as np
import numpy.typing as npt

#: a NumPy array (fastnn's arrays are float32/float64, labels int64)
Array = npt.NDArray[Any]
ArrayLike = npt.ArrayLike
DTypeLike = npt.DTypeLike
#: a filesystem path
PathLike = Union[str, "os.PathLike[str]"]
#: what the optimizers and clipping functions accept as parameters
ParamsLike = Iterable[Any]

__all__ = ["Array", "ArrayLike", "DTypeLike", "PathLike", "np"]
