"""Threading: results of the native engine do not depend on the thread count (bitwise), the
thread-count setting, and concurrent calls from several Python threads."""
import os
import threading

import numpy as np
import pytest

import fastnn
from fastnn import _reference as ref
from _util import assert_bitwise_equal, assert_close, run_python, uniform

# (M, K, N): large enough to go parallel (the native engine runs one thread below ~2 MFLOP);
# the last two force the thread grid to split only columns / only rows
BIG = [(256, 512, 384), (512, 300, 700), (301, 517, 263), (6, 300, 3000), (3000, 300, 8)]
BIG_IDS = ["x".join(map(str, s)) for s in BIG]
THREADS = (1, 2, 3, 4)
OPENMP = fastnn.config()["openmp"]


def _by_threads(fn):
    """{n: fn(n_threads=n)} for every thread count, each result copied."""
    return {n: fn(n) for n in THREADS}


def _assert_same_for_all_threads(results, what):
    base = results[1]
    for n in THREADS[1:]:
        for i, (a, b) in enumerate(zip(base, results[n])):
            assert_bitwise_equal(b, a, f"{what}: output {i}, n_threads={n} vs 1")


@pytest.mark.parametrize("shape", BIG, ids=BIG_IDS)
def test_gemm_bitwise_across_thread_counts(shape, dtype, native, variant, rng):
    M, K, N = shape
    a = uniform(rng, (K, M), dtype)        # used transposed: strided packing of A
    b = uniform(rng, (K, N), dtype)
    bias = uniform(rng, N, dtype)
    c = uniform(rng, (M, N), dtype)

    def run(n):
        out = c.copy()
        fastnn.gemm(a, b, out, trans_a=True, alpha=0.5, beta=-1.0, bias=bias,
                    activation="tanh", n_threads=n)
        return (out,)

    results = _by_threads(run)
    _assert_same_for_all_threads(results, "gemm")
    expected = ref.gemm(a, b, c, trans_a=True, alpha=0.5, beta=-1.0, bias=bias,
                        activation="tanh")
    assert_close(results[2][0], expected, dtype, K)


@pytest.mark.parametrize("shape", BIG, ids=BIG_IDS)
def test_linear_bitwise_across_thread_counts(shape, dtype, native, variant, rng):
    M, K, N = shape
    x = uniform(rng, (M, K), dtype)
    W = uniform(rng, (N, K), dtype, -0.1, 0.1)
    b = uniform(rng, N, dtype)
    g = uniform(rng, (M, N), dtype)

    fwd = _by_threads(lambda n: (fastnn.linear_forward(x, W, b, "relu", n_threads=n),))
    _assert_same_for_all_threads(fwd, "linear_forward")
    y = fwd[1][0]
    assert_close(y, ref.linear_forward(x, W, b, "relu"), dtype, K)

    bwd = _by_threads(lambda n: fastnn.linear_backward(g, x, W, y, "relu", n_threads=n))
    _assert_same_for_all_threads(bwd, "linear_backward")
    ex, eW, eb = ref.linear_backward(g, x, W, y, "relu")
    gx, gW, gb = bwd[2]
    assert_close(gx, ex, dtype, N)
    assert_close(gW, eW, dtype, M)
    assert_close(gb, eb, dtype, M)


@pytest.mark.parametrize("shape", BIG[:1], ids=BIG_IDS[:1])
def test_linear_backward_accumulate_bitwise_across_thread_counts(shape, dtype, native,
                                                                 variant, rng):
    M, K, N = shape
    x = uniform(rng, (M, K), dtype)
    W = uniform(rng, (N, K), dtype, -0.1, 0.1)
    y = fastnn.activation_forward(uniform(rng, (M, N), dtype), "sigmoid")
    g = uniform(rng, (M, N), dtype)
    gW0 = uniform(rng, (N, K), dtype)
    gb0 = uniform(rng, N, dtype)

    def run(n):
        gW, gb = gW0.copy(), gb0.copy()
        fastnn.linear_backward(g, x, W, y, "sigmoid", None, gW, gb, accumulate=True,
                               compute_grad_x=False, n_threads=n)
        return gW, gb

    _assert_same_for_all_threads(_by_threads(run), "linear_backward(accumulate=True)")


def test_global_thread_setting_gives_same_bits(dtype, native, threads, rng):
    M, K, N = BIG[2]
    x = uniform(rng, (M, K), dtype)
    W = uniform(rng, (N, K), dtype, -0.1, 0.1)
    b = uniform(rng, N, dtype)
    fastnn.set_num_threads(1)
    base = fastnn.linear_forward(x, W, b, "sigmoid")
    for n in (2, 3, 4):
        fastnn.set_num_threads(n)
        assert fastnn.get_num_threads() == n
        assert_bitwise_equal(fastnn.linear_forward(x, W, b, "sigmoid"), base, f"threads={n}")
        # an explicit n_threads overrides the global setting
        assert_bitwise_equal(fastnn.linear_forward(x, W, b, "sigmoid", n_threads=1), base)


def test_elementwise_bitwise_across_thread_counts(dtype, native, variant, rng):
    x = uniform(rng, (700, 301), dtype, -5, 5)      # > 65536 elements: parallel
    g = uniform(rng, (700, 301), dtype)
    for act in ("relu", "leaky_relu", "sigmoid", "tanh"):
        fwd = _by_threads(lambda n: (fastnn.activation_forward(x, act, n_threads=n),))
        _assert_same_for_all_threads(fwd, f"activation_forward {act}")
        y = fwd[1][0]
        bwd = _by_threads(lambda n: (fastnn.activation_backward(g, y, act, n_threads=n),))
        _assert_same_for_all_threads(bwd, f"activation_backward {act}")


# ---------------------------------------------------------------- the thread-count setting
def test_set_num_threads_round_trip(threads):
    for n in (2, 1, 3, 2):
        fastnn.set_num_threads(n)
        assert fastnn.get_num_threads() == n
    fastnn.set_num_threads(np.int64(3))        # any integer type (__index__)
    assert fastnn.get_num_threads() == 3
    assert isinstance(fastnn.get_num_threads(), int)


def _openmp_default():
    """omp_get_max_threads() as threadpoolctl reports it for the libgomp fastnn uses."""
    from threadpoolctl import threadpool_info
    for lib in threadpool_info():
        if lib.get("user_api") == "openmp":
            return lib["num_threads"]
    return None


def test_set_num_threads_none_follows_openmp(threads):
    fastnn.set_num_threads(None)
    default = fastnn.get_num_threads()
    assert default >= 1
    if OPENMP:
        omp = _openmp_default()
        if omp is not None:
            assert default == omp
    else:
        assert default == 1
    fastnn.set_num_threads(default + 2)
    assert fastnn.get_num_threads() == default + 2
    fastnn.set_num_threads(None)
    assert fastnn.get_num_threads() == default
    fastnn.set_num_threads(default + 1)
    with pytest.raises(ValueError, match="fastnn.set_num_threads: n must be >= 1 or None"):
        fastnn.set_num_threads(0)              # None, not 0, means "follow OpenMP"
    assert fastnn.get_num_threads() == default + 1


@pytest.mark.skipif(not OPENMP, reason="serial build: always one thread")
def test_default_threads_follow_threadpoolctl(threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fastnn.set_num_threads(None)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastnn.get_num_threads() == 1
    fastnn.set_num_threads(2)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastnn.get_num_threads() == 2    # an explicit setting wins


def test_default_threads_follow_omp_num_threads_env():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    code = ("import fastnn; print(fastnn.get_num_threads()); fastnn.set_num_threads(1); "
            "fastnn.set_num_threads(None); print(fastnn.get_num_threads())")
    res = run_python(["-c", code], env=env)
    assert res.returncode == 0, res.stderr
    expected = "3" if OPENMP else "1"
    assert res.stdout.split() == [expected, expected]


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (-8, ValueError), ("2", TypeError),
                                     (2.0, TypeError), (True, TypeError), ([2], TypeError)])
def test_set_num_threads_rejects(bad, exc, threads):
    fastnn.set_num_threads(2)
    with pytest.raises(exc, match="fastnn.set_num_threads"):
        fastnn.set_num_threads(bad)
    assert fastnn.get_num_threads() == 2       # unchanged by the failed call


# ---------------------------------------------------------------- concurrent Python threads
def _run_concurrently(jobs, iterations):
    """Run every job(i) in its own Python thread, starting together (barrier) for each
    iteration; returns {(thread, iteration): result}; re-raises the first error."""
    barrier = threading.Barrier(len(jobs))
    results, errors = {}, []

    def worker(t):
        try:
            for it in range(iterations):
                barrier.wait(timeout=60)
                results[t, it] = jobs[t](it)
        except BaseException as e:    # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(len(jobs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("engine_name", ["native", "blas"])
@pytest.mark.parametrize("n_threads", [1, None], ids=["1thread", "default_threads"])
def test_concurrent_python_threads(engine_name, n_threads, dtype, rng):
    shapes = [(200, 300, 250), (190, 310, 270), (64, 700, 33)]
    n_jobs, iterations = 3, 4
    data = []
    for t in range(n_jobs):
        M, K, N = shapes[t]
        data.append([(uniform(rng, (M, K), dtype), uniform(rng, (N, K), dtype, -0.1, 0.1),
                      uniform(rng, N, dtype), uniform(rng, (M, N), dtype))
                     for _ in range(iterations)])

    def compute(t, it):
        x, W, b, g = data[t][it]
        y = fastnn.gemm(x, W, trans_b=True, bias=b, activation="tanh", engine=engine_name,
                        n_threads=n_threads)
        grads = fastnn.linear_backward(g, x, W, y, "tanh", engine=engine_name,
                                       n_threads=n_threads)
        return (y,) + grads

    sequential = {(t, it): compute(t, it) for t in range(n_jobs) for it in range(iterations)}
    concurrent = _run_concurrently([lambda it, t=t: compute(t, it) for t in range(n_jobs)],
                                   iterations)
    for key, seq in sequential.items():
        for i, (a, b) in enumerate(zip(concurrent[key], seq)):
            if engine_name == "native":
                assert_bitwise_equal(a, b, f"thread {key[0]}, iteration {key[1]}, out {i}")
            else:     # OpenBLAS may split K differently when busy: equal to rounding
                assert_close(a, b.astype(np.float64), dtype, 700,
                             err_msg=f"thread {key[0]}, iteration {key[1]}, out {i}")
    # and correct, not just consistent
    x, W, b, g = data[0][0]
    assert_close(sequential[0, 0][0],
                 ref.gemm(x, W, trans_b=True, bias=b, activation="tanh"), dtype, 300)


def test_concurrent_threads_shared_readonly_inputs(dtype, native, rng):
    """Two threads sharing read-only inputs and writing separate outputs."""
    x = uniform(rng, (300, 400), dtype)
    x.setflags(write=False)
    W = uniform(rng, (350, 400), dtype, -0.1, 0.1)
    W.setflags(write=False)
    outs = [np.empty((300, 350), dtype) for _ in range(2)]
    expected = fastnn.linear_forward(x, W, None, "sigmoid")
    res = _run_concurrently(
        [lambda it, o=o: fastnn.linear_forward(x, W, None, "sigmoid", o).copy() for o in outs],
        3)
    for r in res.values():
        assert_bitwise_equal(r, expected)
