"""Small-GEMM benchmark of the native engine without Python overhead.

    python -m bench.tiny [--rounds R] [--reps N] [--json out.json] [--only SUBSTR]
    python -m bench.tiny --compare OTHER_SRC [--rounds R]   # interleave with another build

Times gemm_native through the gemm._bench_gemm tuning hook (a nogil C loop of N calls) on
the GEMMs of the tiny 2-64-64-3 net (batch 32), the digits net 64-100-10 (batch 64) and
the CS231n net 1000-100-10 (batch 64), with exactly the operand layouts dense.pyx passes:

    fwd  out = act(x @ W.T + b):  A = x row-major, B = W^T (a transposed view)
    gW   grad_W = dz^T @ x:       A = dz^T (a transposed view), B = x row-major
    gx   grad_x = dz @ W:         A = dz row-major, B = W row-major

Single thread (n_threads=1; these are all below the parallel threshold anyway).  Reports
the median and minimum ns/call over R rounds; the host is noisy, so rounds interleave the
shapes, and --compare alternates rounds between this tree and OTHER_SRC (a copy of src/ with
its own build) in subprocesses and prints both side by side.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

RELU, SIGMOID, IDENT = 1, 3, 0

# (label, dtype, kind, M, N, K, act)  -- M x N x K of the GEMM as gemm_native sees it
SHAPES = [
    ("tiny fwd1", "float32", "fwd", 32, 64, 2, RELU),
    ("tiny fwd2", "float32", "fwd", 32, 64, 64, RELU),
    ("tiny fwd3", "float32", "fwd", 32, 3, 64, IDENT),
    ("tiny gW3", "float32", "gW", 3, 64, 32, IDENT),
    ("tiny gx3", "float32", "gx", 32, 64, 3, IDENT),
    ("tiny gW2", "float32", "gW", 64, 64, 32, IDENT),
    ("tiny gx2", "float32", "gx", 32, 64, 64, IDENT),
    ("tiny gW1", "float32", "gW", 64, 2, 32, IDENT),
    ("digits fwd1", "float32", "fwd", 64, 100, 64, RELU),
    ("digits fwd2", "float32", "fwd", 64, 10, 100, IDENT),
    ("digits gW2", "float32", "gW", 10, 100, 64, IDENT),
    ("digits gx2", "float32", "gx", 64, 100, 10, IDENT),
    ("digits gW1", "float32", "gW", 100, 64, 64, IDENT),
    ("cs231n fwd1", "float32", "fwd", 64, 100, 1000, SIGMOID),
    ("cs231n fwd2", "float32", "fwd", 64, 10, 100, IDENT),
    ("cs231n gW2", "float32", "gW", 10, 100, 64, IDENT),
    ("cs231n gx2", "float32", "gx", 64, 100, 10, IDENT),
    ("cs231n gW1", "float32", "gW", 100, 1000, 64, IDENT),
    ("cs231n fwd1 d", "float64", "fwd", 64, 100, 1000, SIGMOID),
    ("cs231n fwd2 d", "float64", "fwd", 64, 10, 100, IDENT),
    ("cs231n gW2 d", "float64", "gW", 10, 100, 64, IDENT),
    ("cs231n gx2 d", "float64", "gx", 64, 100, 10, IDENT),
    ("cs231n gW1 d", "float64", "gW", 100, 1000, 64, IDENT),
]


# --large: plain row-major GEMMs that must not get slower (bench/gemm.py's shapes)
LARGE = [
    ("mm 64x1000x100", "float32", "mm", 64, 100, 1000, IDENT),
    ("mm 128x784x512", "float32", "mm", 128, 512, 784, IDENT),
    ("fwd 128x784x512", "float32", "fwd", 128, 512, 784, SIGMOID),
    ("mm 512^3", "float32", "mm", 512, 512, 512, IDENT),
    ("mm 1024^3", "float32", "mm", 1024, 1024, 1024, IDENT),
    ("mm 128x784x512 d", "float64", "mm", 128, 512, 784, IDENT),
    ("mm 512^3 d", "float64", "mm", 512, 512, 512, IDENT),
]


def operands(kind, M, N, K, dt, rng):
    """A (M,K), B (K,N), C (M,N) and a bias, laid out as dense.pyx passes them."""
    f = lambda *s: rng.standard_normal(s).astype(dt)
    if kind == "fwd":       # x (M,K) @ W.T, W (N,K)
        A, B, bias = f(M, K), f(N, K).T, f(N)
    elif kind == "mm":      # A (M,K) @ B (K,N), both row-major
        A, B, bias = f(M, K), f(K, N), np.empty(0, dt)
    elif kind == "gW":      # dz.T @ x, dz (K,M) = (batch, out), x (K,N) = (batch, in)
        A, B, bias = f(K, M).T, f(K, N), np.empty(0, dt)
    else:                   # dz (M,K) @ W (K,N)
        A, B, bias = f(M, K), f(K, N), np.empty(0, dt)
    return A, B, np.zeros((M, N), dt), bias


def run(rounds, reps_target_ns, only):
    from fastnn._kernels import gemm
    rng = np.random.default_rng(0)
    cases = []
    for label, dt, kind, M, N, K, act in SHAPES:
        if only and only not in label:
            continue
        A, B, C, bias = operands(kind, M, N, K, np.dtype(dt), rng)
        # check the result once, so a broken fast path cannot win the benchmark
        gemm._bench_gemm(A, B, C, 0.0, np.empty(0, dt), IDENT, 1, 1)
        ref = A.astype(np.float64) @ B.astype(np.float64)
        tol = 1e-4 if dt == "float32" else 1e-10
        assert np.allclose(C, ref, rtol=tol, atol=tol * np.sqrt(K)), label
        t = gemm._bench_gemm(A, B, C, 0.0, bias, act, 1, 200)
        reps = max(20, int(reps_target_ns / max(t, 1.0)))
        cases.append((label, A, B, C, bias, act, reps))
    times = {c[0]: [] for c in cases}
    for _ in range(rounds):
        for label, A, B, C, bias, act, reps in cases:
            times[label].append(gemm._bench_gemm(A, B, C, 0.0, bias, act, 1, reps))
    return times


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--reps-ns", type=float, default=2e6, help="target ns per sample")
    p.add_argument("--json")
    p.add_argument("--only")
    p.add_argument("--compare", help="src/ directory of another build to interleave with")
    p.add_argument("--large", action="store_true", help="the large shapes instead")
    a = p.parse_args(argv)
    if a.large:
        SHAPES[:] = LARGE
    if a.compare:
        here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
        trees = {"base": os.path.abspath(a.compare), "new": here}
        acc = {k: {} for k in trees}
        for r in range(a.rounds):
            for name in (("base", "new") if r % 2 == 0 else ("new", "base")):
                env = dict(os.environ, PYTHONPATH=trees[name])
                cmd = [sys.executable, os.path.abspath(__file__), "--rounds", "3",
                       "--reps-ns", str(a.reps_ns), "--json", "/dev/stdout"]
                if a.only:
                    cmd += ["--only", a.only]
                if a.large:
                    cmd += ["--large"]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                for label, ts in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    acc[name].setdefault(label, []).extend(ts)
        print(f"{'shape':<16}{'MxNxK':>14}{'base med':>10}{'new med':>10}{'base min':>10}"
              f"{'new min':>10}{'speedup':>9}")
        tot = {"base": 0.0, "new": 0.0}
        for label, dt, kind, M, N, K, act in SHAPES:
            if label not in acc["new"]:
                continue
            b, n = np.median(acc["base"][label]), np.median(acc["new"][label])
            if label.startswith("tiny"):
                tot["base"] += b
                tot["new"] += n
            print(f"{label:<16}{f'{M}x{N}x{K}':>14}{b:>10.0f}{n:>10.0f}"
                  f"{min(acc['base'][label]):>10.0f}{min(acc['new'][label]):>10.0f}"
                  f"{b / n:>9.2f}")
        if tot["new"]:
            print(f"{'tiny net total':<30}{tot['base']:>10.0f}{tot['new']:>10.0f}"
                  f"{'':>20}{tot['base'] / tot['new']:>9.2f}")
        return
    times = run(a.rounds, a.reps_ns, a.only)
    if a.json:
        with open(a.json, "w") as f:
            f.write(json.dumps(times) + "\n")
        return
    print(f"{'shape':<16}{'MxNxK':>14}{'median ns':>11}{'min ns':>9}")
    for label, dt, kind, M, N, K, act in SHAPES:
        if label in times:
            print(f"{label:<16}{f'{M}x{N}x{K}':>14}{np.median(times[label]):>11.0f}"
                  f"{min(times[label]):>9.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
