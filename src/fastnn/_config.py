"""Engine, thread and kernel-variant settings of fastnn's compiled core."""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, TextIO

from . import _checks
from ._kernels import _core

# name -> code, from the one table of codes (fnn_types.h)
_ENGINE_CODES = {e.name.lower(): int(e) for e in _core.Engine}
ENGINES = tuple(_ENGINE_CODES)


def get_engine() -> str:
    """The GEMM engine in use: "native" (fastnn's packed GEMM) or "blas" (SciPy's BLAS).

    Returns
    -------
    str
        "native" or "blas".
    """
    return ENGINES[_core.get_engine_code()]


def set_engine(name: str) -> None:
    """Select the GEMM engine for every later kernel call: "native" or "blas".

    "native" is fastnn's own packed GEMM with the bias and activation fused into the
    writeback, bitwise reproducible for any thread count.  "blas" calls the BLAS that SciPy
    ships (OpenBLAS) and applies bias and activation in a separate single-threaded pass; its
    threads follow OpenBLAS's own setting (OPENBLAS_NUM_THREADS, threadpoolctl).

    Parameters
    ----------
    name : {"native", "blas"}
        The engine (case-insensitive).

    Raises
    ------
    ValueError
        For any other name.
    """
    if not isinstance(name, str) or name.lower() not in _ENGINE_CODES:
        raise ValueError(f"fastnn.set_engine: expected one of {ENGINES}, got {name!r}")
    _core.set_engine_code(_ENGINE_CODES[name.lower()])


def get_num_threads() -> int:
    """Threads the native kernels use: the value given to set_num_threads(), else OpenMP's
    omp_get_max_threads() (which follows OMP_NUM_THREADS and threadpoolctl).

    Returns
    -------
    int
        The thread count (>= 1).
    """
    return _core.get_num_threads()


def set_num_threads(n: int | None) -> None:
    """Use n threads (an int >= 1) in the native kernels; None returns to following OpenMP's
    default (OMP_NUM_THREADS, threadpoolctl).  Results do not depend on n.

    Parameters
    ----------
    n : int or None
        Threads (>= 1), or None to follow OpenMP's default again.

    Raises
    ------
    ValueError
        For n < 1 or a non-integer.
    """
    _core.set_num_threads_raw(0 if n is None else
                              _checks.num_threads("fastnn.set_num_threads", n, what="n"))


def get_kernel_variant() -> str:
    """The microkernel variant in use: "avx512", "avx2" or "generic".

    Returns
    -------
    str
        "avx512", "avx2" or "generic".
    """
    return _core.get_variant()


def set_kernel_variant(name: str) -> None:
    """Force a microkernel variant ("avx512", "avx2", "generic"); the CPU must support it.
    The default is the fastest supported one (or the FASTNN_KERNEL environment variable).

    Parameters
    ----------
    name : {"avx512", "avx2", "generic"}
        The variant; it must be in ``supported_kernel_variants()``.

    Raises
    ------
    ValueError
        For an unknown name or one the CPU does not support.
    """
    _core.set_variant(name)


def supported_kernel_variants() -> tuple[str, ...]:
    """The microkernel variants this CPU can run, slowest first.

    Returns
    -------
    tuple of str
        A subset of ("generic", "avx2", "avx512"), always with "generic".
    """
    return _core.supported_variants()


def _env_choice(var, allowed, default):
    """The value of environment variable `var` when it is one of `allowed`; otherwise
    `default`, with a RuntimeWarning when the variable is set to something else (a typo
    must never break `import fastnn`)."""
    value = os.environ.get(var, "").strip().lower()
    if not value:
        return default
    if value not in allowed:
        import warnings
        warnings.warn(f"{var}={value!r} ignored: expected one of {tuple(allowed)}; using "
                      f"{default!r}", RuntimeWarning, stacklevel=3)
        return default
    return value


def config() -> dict[str, Any]:
    """The configuration as a dict (what show_config prints).

    Returns
    -------
    dict
        Keys "fastnn", "python", "platform", "engine", "kernel_variant",
        "supported_variants", "openmp", "num_threads", "cpu_count", "blocking_float32",
        "blocking_float64", "build" (how the extensions were compiled, e.g.
        "release -O3 -g0"), "blas", "numpy", "scipy".
    """
    from . import __version__
    info = {
        "fastnn": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "engine": get_engine(),
        "kernel_variant": get_kernel_variant(),
        "supported_variants": list(supported_kernel_variants()),
        "openmp": _core.openmp_enabled(),
        "num_threads": get_num_threads(),
        "cpu_count": os.cpu_count(),
        "blocking_float32": _core.kernel_blocking("float32"),
        "blocking_float64": _core.kernel_blocking("float64"),
        "build": _core.build_info(),
        "blas": [],
    }
    try:
        import numpy
        import scipy
        info["numpy"] = numpy.__version__
        info["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [
            {k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                   "threading_layer", "filepath")}
            for d in threadpool_info() if d.get("user_api") in ("blas", "openmp")
        ]
    except Exception:  # pragma: no cover - threadpoolctl is a dependency, but be robust
        pass
    return info


def show_config(file: TextIO | None = None) -> None:
    """Print version, engine, CPU features in use, OpenMP, threads and BLAS libraries.

    Parameters
    ----------
    file : file-like, optional
        Where to print (default: sys.stdout).
    """
    info = config()
    out = file or sys.stdout
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"fastnn {info['fastnn']}  (Python {info['python']}, numpy {info.get('numpy')}, "
      f"scipy {info.get('scipy')})")
    p(f"  platform        : {info['platform']}")
    p(f"  engine          : {info['engine']}")
    p(f"  kernel variant  : {info['kernel_variant']}  (CPU supports: "
      f"{', '.join(info['supported_variants'])})")
    mr, nr, kc, mc, nc = info["blocking_float32"]
    p(f"  float32 blocking: MR={mr} NR={nr} KC={kc} MC={mc} NC={nc}")
    mr, nr, kc, mc, nc = info["blocking_float64"]
    p(f"  float64 blocking: MR={mr} NR={nr} KC={kc} MC={mc} NC={nc}")
    p(f"  build           : {info['build']}")
    p(f"  OpenMP          : {'on' if info['openmp'] else 'off (serial build)'}")
    p(f"  threads         : {info['num_threads']} (of {info['cpu_count']} CPUs)")
    for lib in info["blas"]:
        p(f"  {lib['internal_api']:<16}: {lib.get('version')} "
          f"{lib.get('architecture') or ''} threads={lib.get('num_threads')} "
          f"({os.path.basename(lib.get('filepath') or '')})")


_supported = supported_kernel_variants()
set_kernel_variant(_env_choice("FASTNN_KERNEL", _supported, _supported[-1]))
# the native engine needs vector FMA to beat BLAS
set_engine(_env_choice("FASTNN_ENGINE", ENGINES,
                       "native" if get_kernel_variant() in ("avx2", "avx512") else "blas"))
del _supported
