"""Helpers shared by the test modules (imported as `_util`; pytest puts tests/ on sys.path)."""
import math

import numpy as np

import fastnn
from fastnn._kernels._core import Activation, Engine

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# the codes table of the kernels (fnn_types.h), as the library exposes it
ENGINES = tuple(e.name.lower() for e in Engine)
VARIANTS = tuple(fastnn.supported_kernel_variants())
ACTIVATIONS = tuple(a.name.lower() for a in Activation)
# every epilogue, leaky_relu with two slopes
ACT_SLOPES = (("identity", 0.01), ("relu", 0.01), ("leaky_relu", 0.01), ("leaky_relu", 0.2),
              ("sigmoid", 0.01), ("tanh", 0.01))
ACT_IDS = [f"{a}-{s}" if a == "leaky_relu" else a for a, s in ACT_SLOPES]


def tolerances(dtype, k=1):
    """(rtol, atol) for a result built from length-k dot products vs the float64 reference."""
    s = math.sqrt(max(int(k), 1))
    if np.dtype(dtype) == np.float32:
        return 1e-4, 1e-5 * s
    return 1e-10, 1e-12 * s


def assert_close(actual, expected, dtype, k=1, err_msg="", scale=1.0):
    """Compare with the reference; `scale` multiplies atol for results of larger magnitude."""
    rtol, atol = tolerances(dtype, k)
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.dtype == np.dtype(dtype), (actual.dtype, dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale,
                               err_msg=err_msg)


def uniform(rng, shape, dtype, low=-1.0, high=1.0):
    return rng.uniform(low, high, size=shape).astype(dtype)


def assert_bitwise_equal(actual, expected, err_msg=""):
    """Same shape, dtype and bits (stricter than np.array_equal: NaNs and the sign of
    zeros included)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape, err_msg)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype, err_msg)
    if actual.tobytes() == expected.tobytes():
        return
    diff = actual != expected  # (0 here if only NaN payloads or signs of zeros differ)
    with np.errstate(invalid="ignore"):
        worst = np.nanmax(np.abs(actual.astype(np.float64) - expected))
    raise AssertionError(f"not bitwise equal {err_msg}: {int(diff.sum())} of {diff.size} "
                         f"elements differ, max abs difference {worst:.3g}")


def run_python(args, env=None, timeout=300):
    """Run a fresh interpreter (python ARGS...) that imports the same fastnn as this one
    (installed or in-place build), from a neutral working directory."""
    import os
    import subprocess
    import sys
    import tempfile

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [pkg_parent] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, *args], env=full_env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)


def layouts():
    """A hypothesis strategy for the memory layout of a 2-D operand (see laid_out)."""
    from hypothesis import strategies as st
    return st.fixed_dictionaries(dict(
        order=st.sampled_from("CF"), step_r=st.integers(1, 3), step_c=st.integers(1, 3),
        flip_r=st.booleans(), flip_c=st.booleans(), offset=st.integers(0, 2),
        broadcast=st.sampled_from([None, None, None, None, "rows", "cols"])))


def laid_out(rng, shape, dtype, lay):
    """A random array of `shape` viewed through the layout `lay`: C/F order, sliced with
    steps, reversed, offset, or broadcast (zero stride, read-only)."""
    rows, cols = shape
    if lay["broadcast"] == "rows":
        return np.broadcast_to(uniform(rng, (1, cols), dtype), shape)
    if lay["broadcast"] == "cols":
        return np.broadcast_to(uniform(rng, (rows, 1), dtype), shape)
    base = uniform(rng, (rows * lay["step_r"] + lay["offset"],
                         cols * lay["step_c"] + lay["offset"]), dtype)
    base = np.asarray(base, order=lay["order"])
    v = base[lay["offset"]::lay["step_r"], lay["offset"]::lay["step_c"]][:rows, :cols]
    if lay["flip_r"]:
        v = v[::-1]
    if lay["flip_c"]:
        v = v[:, ::-1]
    assert v.shape == (rows, cols)
    return v
