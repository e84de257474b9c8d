"""Tune the native engine's cache blocking: python -m bench.tune float32 KCs MCs NCs [rounds]

e.g.  python -m bench.tune float64 96,128,192 48,96,144 1024,3072
Each (KC, MC, NC) and numpy.matmul are timed on the benchmark shapes, single-threaded,
interleaved over `rounds` rounds; the best time of each is reported as GFLOP/s.  Put the
winner in the kernel table of src/fastnn/_kernels/fnn_simd.h.
"""
import itertools
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastnn
from fastnn._kernels import _core

SHAPES = [(64, 1000, 100), (128, 784, 512), (1024, 1024, 1024), (512, 2048, 2048)]


def main(argv):
    dt = np.dtype(argv[0])
    cfgs = list(itertools.product(*[list(map(int, x.split(","))) for x in argv[1:4]]))
    rounds = int(argv[4]) if len(argv) > 4 else 15
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((M, K)).astype(dt), rng.standard_normal((K, N)).astype(dt),
             np.empty((M, N), dt)) for M, K, N in SHAPES]
    fastnn.set_num_threads(1)
    saved = _core.kernel_blocking(dt.name)
    best = {}
    # one short sample per (config, shape) per round, many rounds: the host's noise comes in
    # bursts of seconds, so fine interleaving plus the minimum approximates the quiet speed
    with threadpool_limits(1):
        try:
            for _ in range(rounds):
                for ci, cfg in enumerate(cfgs + ["numpy"]):
                    if cfg != "numpy":
                        _core._set_blocking(dt.name, *cfg)
                    for si, (a, b, c) in enumerate(data):
                        fn = ((lambda: np.matmul(a, b, out=c)) if cfg == "numpy"
                              else (lambda: fastnn.gemm(a, b, c)))
                        reps = max(1, int(2e7 / (2 * a.shape[0] * a.shape[1] * b.shape[1])))
                        fn()
                        t0 = time.perf_counter()
                        for _ in range(reps):
                            fn()
                        t = (time.perf_counter() - t0) / reps
                        best[ci, si] = min(best.get((ci, si), 1e9), t)
        finally:
            _core._set_blocking(dt.name, *saved[2:])
    print("config (KC, MC, NC)   " + "  ".join(f"{M}x{K}x{N}" for M, K, N in SHAPES))
    for ci, cfg in enumerate(cfgs + ["numpy"]):
        print(f"{str(cfg):<22}" + "  ".join(
            f"{2 * a.shape[0] * a.shape[1] * b.shape[1] / best[ci, si] / 1e9:>{len(f'{M}x{K}x{N}')}.1f}"
            for si, ((a, b, c), (M, K, N)) in enumerate(zip(data, SHAPES))))


if __name__ == "__main__":
    main(sys.argv[1:])
