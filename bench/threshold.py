"""Measure where a parallel GEMM starts to pay: python -m bench.threshold [--threads 2]

For square-ish problems from ~0.1 to ~30 MFLOP, times the native engine on 1 thread and on
N threads with the serial cut-off disabled, interleaved, and prints the ratio.  The
cut-off in src/fastnn/_kernels/gemm.pyx (PARALLEL_MIN_FLOPS) should sit where the ratio
crosses 1.
"""
import argparse
import statistics
import time

import numpy as np

import fastnn
from fastnn._kernels import gemm as _gemm


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, default=7)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    saved = _gemm._get_parallel_threshold()
    rng = np.random.default_rng(0)
    print(f"{'MxKxN':>16}{'MFLOP':>8}{'1 thr us':>10}{f'{args.threads} thr us':>10}{'speedup':>9}")
    try:
        _gemm._set_parallel_threshold(0, 0)
        for n in (24, 32, 48, 64, 80, 96, 128, 160, 192, 256):
            M, K, N = n, n * 2, n
            a = rng.standard_normal((M, K)).astype(args.dtype)
            b = rng.standard_normal((K, N)).astype(args.dtype)
            c = np.empty((M, N), args.dtype)
            flop = 2.0 * M * N * K
            reps = max(3, int(2e8 / flop))
            res = {1: [], args.threads: []}
            for _ in range(args.blocks):
                for nt in res:
                    fastnn.gemm(a, b, c, n_threads=nt)
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        fastnn.gemm(a, b, c, n_threads=nt)
                    res[nt].append((time.perf_counter() - t0) / reps * 1e6)
            t1, tn = statistics.median(res[1]), statistics.median(res[args.threads])
            print(f"{M:>6}x{K}x{N:<6}{flop / 1e6:>8.2f}{t1:>10.1f}{tn:>10.1f}{t1 / tn:>9.2f}")
    finally:
        _gemm._set_parallel_threshold(*saved)


if __name__ == "__main__":
    main()
