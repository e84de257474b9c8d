"""Engine / kernel-variant settings, show_config / config, and no flush-to-zero."""
import os
import io
import re

import numpy as np
import pytest

import fastnn
from _util import VARIANTS, run_python


def test_engine_round_trip():
    for name in ("blas", "native", "blas"):
        fastnn.set_engine(name)
        assert fastnn.get_engine() == name
    fastnn.set_engine("NATIVE")          # case-insensitive
    assert fastnn.get_engine() == "native"


@pytest.mark.parametrize("bad", ["mkl", "", "native ", None, 0])
def test_set_engine_invalid(bad):
    fastnn.set_engine("blas")
    with pytest.raises(ValueError, match=r"fastnn\.set_engine: expected one of .*native.*"
                                         r"blas.*got " + re.escape(repr(bad))):
        fastnn.set_engine(bad)
    assert fastnn.get_engine() == "blas"     # unchanged


def test_global_engine_setting_is_used():
    """Kernel calls without engine= run on the engine set globally: bitwise the same as
    naming that engine (the two engines round differently on this data)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 300)).astype(np.float32)
    b = rng.standard_normal((300, 40)).astype(np.float32)
    explicit = {e: fastnn.gemm(a, b, engine=e) for e in ("native", "blas")}
    assert not np.array_equal(explicit["native"], explicit["blas"]), \
        "test data no longer tells the engines apart"
    for e in ("blas", "native"):
        fastnn.set_engine(e)
        np.testing.assert_array_equal(fastnn.gemm(a, b), explicit[e])
        np.testing.assert_allclose(explicit[e], a.astype(np.float64) @ b, rtol=1e-4,
                                   atol=1e-4)


def test_kernel_variants():
    supported = fastnn.supported_kernel_variants()
    assert isinstance(supported, tuple)
    assert supported[0] == "generic"
    assert set(supported) <= {"generic", "avx2", "avx512"}
    assert fastnn.get_kernel_variant() in supported
    for v in supported:
        fastnn.set_kernel_variant(v)
        assert fastnn.get_kernel_variant() == v
        assert fastnn.config()["kernel_variant"] == v


@pytest.mark.parametrize("bad", ["sse9", "", "AVX2x", "neon512"])
def test_set_kernel_variant_unknown(bad):
    before = fastnn.get_kernel_variant()
    with pytest.raises(ValueError, match=r"unknown kernel variant " + re.escape(repr(bad))):
        fastnn.set_kernel_variant(bad)
    assert fastnn.get_kernel_variant() == before


def test_set_kernel_variant_wrong_type():
    with pytest.raises(TypeError):
        fastnn.set_kernel_variant(2)


def test_blocking_follows_variant():
    """Each variant has its own tile sizes (MR x NR): the variant switch is real."""
    seen = {}
    for v in VARIANTS:
        fastnn.set_kernel_variant(v)
        seen[v] = (fastnn.config()["blocking_float32"], fastnn.config()["blocking_float64"])
        for mr, nr, kc, mc, nc in seen[v]:
            assert mr >= 1 and nr >= 1 and kc >= 1 and mc % mr == 0 and nc % nr == 0
    assert len(set(seen.values())) == len(VARIANTS)


def test_config_keys():
    info = fastnn.config()
    for key in ("fastnn", "python", "platform", "engine", "kernel_variant",
                "supported_variants", "openmp", "num_threads", "cpu_count",
                "blocking_float32", "blocking_float64", "build", "blas", "numpy", "scipy"):
        assert key in info, key
    assert info["build"].split()[0] in ("release", "debug", "sanitize"), info["build"]
    assert info["fastnn"] == fastnn.__version__
    assert info["engine"] == fastnn.get_engine()
    assert info["kernel_variant"] == fastnn.get_kernel_variant()
    assert info["num_threads"] == fastnn.get_num_threads()
    assert isinstance(info["openmp"], bool)
    assert list(info["supported_variants"]) == list(fastnn.supported_kernel_variants())


def test_show_config(threads):
    fastnn.set_engine("blas")
    fastnn.set_kernel_variant(VARIANTS[0])
    fastnn.set_num_threads(3)
    buf = io.StringIO()
    assert fastnn.show_config(file=buf) is None
    text = buf.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith(f"fastnn {fastnn.__version__}")

    def line(word):
        found = [ln for ln in lines if ln.strip().lower().startswith(word)]
        assert found, f"no line starting with {word!r} in:\n{text}"
        return found[0]

    assert "blas" in line("engine")
    assert VARIANTS[0] in line("kernel variant")
    assert ("on" if fastnn.config()["openmp"] else "off") in line("openmp")
    assert "3" in line("threads")
    for v in VARIANTS:
        assert v in text


def test_show_config_default_stdout(capsys):
    fastnn.show_config()
    out = capsys.readouterr().out
    assert "engine" in out and "OpenMP" in out and "threads" in out
    assert fastnn.get_kernel_variant() in out


# ---------------------------------------------------------------- denormals (no FTZ/DAZ)
def _denormals_survive():
    return (np.float64(1e-310) * 1.0 != 0 and np.float64(1e-310) / 2.0 != 0
            and np.float32(1e-40) * np.float32(1.0) != 0
            and np.float32(1e-40) / np.float32(2.0) != 0)


def test_import_does_not_enable_flush_to_zero():
    assert _denormals_survive()
    # in a fresh interpreter too, right after the import
    code = ("import numpy as np, fastnn\n"
            "assert np.float64(1e-310) * 1.0 != 0, 'float64 denormal flushed'\n"
            "assert np.float32(1e-40) * np.float32(1.0) != 0, 'float32 denormal flushed'\n"
            "assert np.float64(1e-310) + 0.0 == np.float64(1e-310)\n"
            "print('ok')")
    res = run_python(["-c", code])
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_kernels_do_not_flush_denormals(dtype, engine, variant):
    """Denormal results survive the kernels, and calling them does not switch the FPU of
    the calling thread to flush-to-zero."""
    tiny = 1e-310 if dtype == np.float64 else 1e-40
    assert 0 < tiny < np.finfo(dtype).tiny           # really a denormal
    a = np.full((3, 2), tiny, dtype)
    b = np.array([[1.0, 0.5], [0.0, 0.0]], dtype)
    got = fastnn.gemm(a, b)
    np.testing.assert_array_equal(got, np.array([[tiny, tiny / 2]] * 3, dtype))
    y = fastnn.activation_forward(np.full((2, 9), tiny, dtype), "relu")
    assert np.all(y == np.asarray(tiny, dtype))
    assert _denormals_survive()


@pytest.mark.skipif(len(VARIANTS) < 2 or "generic" not in VARIANTS,
                    reason="needs the generic variant and a vector-FMA one")
def test_variant_switch_changes_the_kernel(native):
    """The generic kernel rounds a*b and the sum separately, the AVX variants use fused
    multiply-add: on the same data their float32 results differ in the last bits, which
    shows that set_kernel_variant really swaps the microkernel."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((40, 300)).astype(np.float32)
    b = rng.standard_normal((300, 50)).astype(np.float32)
    results = {}
    for v in VARIANTS:
        fastnn.set_kernel_variant(v)
        results[v] = fastnn.gemm(a, b)
        np.testing.assert_allclose(results[v], a.astype(np.float64) @ b, rtol=1e-4, atol=3e-4)
    assert not np.array_equal(results["generic"], results[VARIANTS[-1]])


def test_parallel_kernels_keep_denormals(dtype, native, variant):
    """The OpenMP worker threads do not flush or zero denormals either (a large GEMM and a
    large elementwise pass, both split across threads)."""
    tiny = 1e-312 if dtype == np.float64 else 1e-42
    M, K, N = 256, 64, 256                       # 8 MFLOP: runs on several threads
    a = np.full((M, K), tiny, dtype)
    b = np.full((K, N), 1.0, dtype)
    got = fastnn.gemm(a, b, n_threads=2)
    expected = np.asarray(tiny, dtype) * K       # exact: K = 64 is a power of two
    assert 0 < expected < np.finfo(dtype).tiny
    assert np.all(got == expected), np.unique(got)
    x = np.full((400, 300), -tiny, dtype)        # > 65536 elements: parallel; x*slope
    np.testing.assert_array_equal(fastnn.activation_forward(x, "leaky_relu",
                                                            negative_slope=1.0,
                                                            n_threads=2), x)


# ---------------------------------------------------------------- environment overrides
@pytest.mark.parametrize("var,value,expect", [
    ("FASTNN_KERNEL", "generic", "generic blas"),      # no vector FMA: BLAS is the default
    ("FASTNN_ENGINE", "blas", None),
])
def test_env_overrides(var, value, expect):
    env = dict(os.environ, **{var: value})
    res = run_python(["-c", "import fastnn; print(fastnn.get_kernel_variant(), "
                            "fastnn.get_engine())"], env=env)
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip()
    if expect is not None:
        assert out == expect
    else:
        assert out.split()[1] == value


@pytest.mark.parametrize("var,value", [("FASTNN_KERNEL", "bogus"), ("FASTNN_ENGINE", "gpu")])
def test_bad_env_override_warns_and_falls_back(var, value):
    """A typo in an environment variable must not make `import fastnn` fail: it warns,
    naming the variable, and uses the default."""
    env = dict(os.environ, **{var: value})
    env.pop("FASTNN_KERNEL" if var == "FASTNN_ENGINE" else "FASTNN_ENGINE", None)
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import fastnn; print(fastnn.get_kernel_variant(), fastnn.get_engine())")
    res = run_python(["-c", code], env=env)
    assert res.returncode == 0, res.stderr
    assert f"{var}={value!r} ignored" in res.stderr
    assert "RuntimeWarning" in res.stderr
    clean = dict(os.environ)
    clean.pop("FASTNN_KERNEL", None)
    clean.pop("FASTNN_ENGINE", None)
    default = run_python(["-c", "import fastnn; print(fastnn.get_kernel_variant(), "
                                "fastnn.get_engine())"], env=clean)
    assert res.stdout.strip() == default.stdout.strip()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fma_peak_every_variant(dtype):
    """bench.gemm's FMA-ceiling loop (_core._fma_peak) runs on every supported variant and
    both dtypes and reports a finite, positive rate; other dtypes are refused."""
    from fastnn._kernels import _core
    saved = fastnn.get_kernel_variant()
    try:
        for v in VARIANTS:
            fastnn.set_kernel_variant(v)
            g = _core._fma_peak(dtype, 20000)
            assert np.isfinite(g) and g > 0, (v, dtype, g)
    finally:
        fastnn.set_kernel_variant(saved)
    with pytest.raises(ValueError, match="dtype"):
        _core._fma_peak("float16", 10)
