"""GEMM benchmark: python bench/gemm.py [--quick] [--threads 1,2] [--json out.json]

GFLOP/s of fastnn's native engine, its BLAS engine and numpy.matmul for 64x1000x100,
128x784x512, 1024x1024x1024 and 512x4096x4096 (MxKxN), float32 and float64, 1 and all
threads, with ratios against NumPy from the same run.  Results also go to
bench/results/gemm-<timestamp>.json.
"""
import os
import sys
import time

from fastnn._bench import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--json" not in argv:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        os.makedirs(out, exist_ok=True)
        argv += ["--json", os.path.join(out, time.strftime("gemm-%Y%m%d-%H%M%S.json"))]
    main(argv)
