"""GEMM benchmark: python -m bench.gemm [--quick] [--dtype float32,float64] [--threads 1,2]
                                 [--blocks N] [--json PATH]

(run from the repository root; needs fastnn importable, e.g. PYTHONPATH=src)

GFLOP/s of fastnn's native engine, its BLAS engine, numpy.matmul and BLIS (the `blis`
package, as thinc uses it, when installed; one thread) for 64x1000x100, 128x784x512,
1024x1024x1024 and 512x4096x4096 (MxKxN; --quick: 64x1000x100, 128x784x512, 512x512x512),
float32 and float64, 1 and all threads, with ratios against NumPy from the same run, the
cost of fusing bias + sigmoid into the native GEMM, and on one thread the FMA ceiling of
the kernel variant in use (its microkernel's accumulators updated by FMAs on registers
only, timed in the same blocks) and the native engine as % of it.  Results go to --json,
by default bench/results/gemm-<timestamp>.json.

The kernel variant is fastnn's (FASTNN_KERNEL=avx2 to measure the AVX2 one on an AVX-512
machine); NumPy's OpenBLAS picks its own kernels by CPU, and is reported: compare the AVX2
variant with OpenBLAS's AVX2 kernels by running with OPENBLAS_CORETYPE=Haswell as well.

Method: the same operands for every contender; a warm-up call; then `blocks` rounds in
which the contenders alternate call by call (on one thread all four; with several threads
each thread pool runs in its own block after a pause that lets the previous pool go idle,
and only native / native+bias+sigmoid alternate) -- see _measure.  We report the median
per-call time (and min/max) as GFLOP/s and the ratio to numpy.matmul from the same run.
Threads: fastnn via set_num_threads, NumPy and the BLAS engine via threadpoolctl.  The
machine's load average is recorded, and a block whose CPU time shows other processes
competing is flagged.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import fastnn
from bench.run import cpu_model, write_json
from fastnn._kernels import _core

try:  # BLIS as packaged for thinc/spaCy: single-threaded, C-contiguous operands only
    import blis.py as _blis
except ImportError:  # pragma: no cover - optional peer
    _blis = None

FMA = "fma-ceiling"

SHAPES = [(64, 1000, 100), (128, 784, 512), (1024, 1024, 1024), (512, 4096, 4096)]
QUICK_SHAPES = [(64, 1000, 100), (128, 784, 512), (512, 512, 512)]


def _time_block(fn, reps):
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _ in range(reps):
        fn()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return wall / reps, cpu / max(wall, 1e-12)


def _groups(names, nt):
    """Contenders that alternate call by call.  On one thread all of them; with several
    threads each thread pool runs alone (OpenBLAS's and ours would fight for the cores), so
    only fastnn's native variants alternate."""
    if nt == 1:
        return [list(names)]
    native = [n for n in names if n.startswith("native")]
    return [[n] for n in names if n not in native and n != FMA] + [native]


def _measure(contenders, nt, blocks, block_s, settle_s):
    """Per-call times of every contender: `blocks` rounds; in each, every group of
    contenders runs for ~block_s with its members alternating call by call (slow drifts of
    the machine then hit them alike).  Multi-threaded groups start after a settle_s pause so
    that the previous pool is idle (OpenBLAS's workers spin 2**28 cycles, ~0.13 s, after a call).  Returns
    ({name: [seconds per call]}, number of disturbed 1-thread groups)."""
    for fn in contenders.values():  # warm-up (workspaces, thread pools)
        fn()
    one = {}
    for name, fn in contenders.items():
        one[name], _ = _time_block(fn, 1)
    times = {name: [] for name in contenders}
    loaded = 0
    for _ in range(blocks):
        for group in _groups(contenders, nt):
            if nt > 1:
                time.sleep(settle_s)
            calls = max(1, int(block_s / sum(one[n] for n in group)))
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                for name in group:
                    t, _ = _time_block(contenders[name], 1)
                    times[name].append(t)
            util = (time.process_time() - c0) / max(time.perf_counter() - w0, 1e-12)
            if nt == 1 and util < 0.9:   # descheduled: another process had our core
                loaded += 1
    return times, loaded


def bench_gemm(shapes=SHAPES, dtypes=("float32", "float64"), threads=(1, 2), blocks=7,
               block_s=0.15, epilogue=True, settle_s=0.25, log=print):
    """Return a list of result rows (dicts); prints a table through `log`."""
    rng = np.random.default_rng(0)
    rows = []
    saved_threads = fastnn.get_num_threads()
    try:
        for dt in dtypes:
            for (M, K, N) in shapes:
                a = rng.standard_normal((M, K)).astype(dt)
                b = rng.standard_normal((K, N)).astype(dt)
                bias = rng.standard_normal(N).astype(dt)
                c = np.empty((M, N), dt)
                flop = 2.0 * M * N * K
                contenders = {
                    "numpy": lambda: np.matmul(a, b, out=c),
                    "native": lambda: fastnn.gemm(a, b, c, engine="native"),
                    "blas": lambda: fastnn.gemm(a, b, c, engine="blas"),
                }
                if epilogue:
                    contenders["native+bias+sigmoid"] = lambda: fastnn.gemm(
                        a, b, c, bias=bias, activation="sigmoid", engine="native")
                if _blis is not None:
                    contenders["blis"] = lambda: _blis.gemm(a, b, out=c, beta=0.0)
                # the FMA ceiling, sized like one call of the product (1 thread only)
                fma_rounds = _fma_rounds(dt, flop)
                contenders[FMA] = lambda: _core._fma_peak(dt, fma_rounds)
                # correctness cross-check before timing
                ref = a.astype(np.float64) @ b.astype(np.float64)
                tol = 1e-3 if dt == "float32" else 1e-10
                for name in ("native", "blas") + (("blis",) if _blis is not None else ()):
                    contenders[name]()
                    err = np.max(np.abs(c - ref)) / max(1.0, np.max(np.abs(ref)))
                    if err > tol:
                        raise RuntimeError(f"{name} gemm disagrees with float64 matmul: {err}")
                for nt in threads:
                    fastnn.set_num_threads(nt)
                    # one-thread peers (BLIS, the FMA loop) only in the one-thread rows
                    active = {k: f for k, f in contenders.items()
                              if nt == 1 or k not in ("blis", FMA)}
                    with threadpool_limits(nt):
                        times, loaded = _measure(active, nt, blocks, block_s, settle_s)
                    flops = {k: (2.0 * fma_rounds * _fma_width(dt) if k == FMA else flop)
                             for k in times}
                    med = {k: statistics.median(v) for k, v in times.items()}
                    row = {
                        "dtype": dt, "M": M, "K": K, "N": N, "threads": nt,
                        "gflops": {k: flops[k] / v / 1e9 for k, v in med.items()},
                        "gflops_min": {k: flops[k] / max(v) / 1e9 for k, v in times.items()},
                        "gflops_max": {k: flops[k] / min(v) / 1e9 for k, v in times.items()},
                        "ratio_vs_numpy": {k: med["numpy"] / v for k, v in med.items()
                                           if k != FMA},
                        "disturbed_blocks": loaded,
                        "samples": {k: len(v) for k, v in times.items()},
                    }
                    if FMA in med:
                        row["pct_of_fma_ceiling"] = {
                            k: 100 * row["gflops"][k] / row["gflops"][FMA]
                            for k in row["gflops"] if k != FMA}
                    if epilogue:
                        row["epilogue_overhead"] = med["native+bias+sigmoid"] / med["native"] - 1
                    rows.append(row)
                    _print_row(row, log)
    finally:
        fastnn.set_num_threads(saved_threads)
    return rows


def _fma_width(dt):
    """Flops per round of the FMA ceiling loop / 2: the variant's MR x NR."""
    mr, nr = _core.kernel_blocking(dt)[:2]
    return mr * nr


def _fma_rounds(dt, flop):
    """Rounds of the FMA loop doing about as many flops as one product (>= 0.5 ms)."""
    return max(int(flop / (2.0 * _fma_width(dt))), 20000)


def _print_header(log):
    log(f"{'dtype':<8}{'MxKxN':>16}{'thr':>4}{'numpy':>9}{'native':>9}{'blas':>9}"
        f"{'blis':>7}{'FMA':>7}{'nat/np':>8}{'blas/np':>8}{'nat/blis':>9}{'%FMA':>6}"
        f"{'epilogue':>10}")


def _print_row(r, log):
    g, q = r["gflops"], r["ratio_vs_numpy"]
    ep = f"{100 * r['epilogue_overhead']:+.1f}%" if "epilogue_overhead" in r else ""
    warn = "  (CPU contended)" if r["disturbed_blocks"] else ""
    blis = f"{g['blis']:>7.1f}" if "blis" in g else f"{'-':>7}"
    fma = f"{g[FMA]:>7.1f}" if FMA in g else f"{'-':>7}"
    nb = f"{g['native'] / g['blis']:>9.2f}" if "blis" in g else f"{'-':>9}"
    pct = (f"{r['pct_of_fma_ceiling']['native']:>5.0f}%" if "pct_of_fma_ceiling" in r
           else f"{'-':>6}")
    log(f"{r['dtype']:<8}{r['M']:>6}x{r['K']}x{r['N']:<6}{r['threads']:>3}"
        f"{g['numpy']:>9.1f}{g['native']:>9.1f}{g['blas']:>9.1f}{blis}{fma}"
        f"{q['native']:>8.2f}{q['blas']:>8.2f}{nb}{pct}{ep:>10}{warn}")


def machine_info():
    info = fastnn.config()
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        info["loadavg"] = None
    info["cpu"] = cpu_model()
    info["numpy_blas"] = [{k: i.get(k) for k in ("internal_api", "version", "architecture")}
                          for i in threadpool_info() if i.get("user_api") == "blas"]
    info["blis"] = _blis is not None
    return info


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.gemm",
                                description=__doc__[__doc__.index("GFLOP/s"):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes, few blocks (~1 min)")
    p.add_argument("--threads", default=None, help="comma list, default '1,N' (N = all)")
    p.add_argument("--dtype", default="float32,float64")
    p.add_argument("--blocks", type=int, default=None)
    p.add_argument("--json", default=None,
                   help="result file (default bench/results/gemm-<timestamp>.json)")
    args = p.parse_args(argv)

    ncpu = os.cpu_count() or 1
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else sorted({1, fastnn.get_num_threads() or ncpu}))
    info = machine_info()
    blas = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']} kernels)"
                     for b in info["numpy_blas"]) or "unknown"
    print(f"fastnn {info['fastnn']} | {info['cpu']} | kernel {info['kernel_variant']} | "
          f"OpenMP {'on' if info['openmp'] else 'off'} | load avg {info['loadavg']}")
    print(f"numpy.matmul: {blas} | BLIS: {'blis package' if info['blis'] else 'not installed'}")
    print("GFLOP/s from the median per-call time, contenders alternating call by call; "
          "ratios against numpy.matmul in the same run; epilogue = extra time of "
          "bias+sigmoid fused into the native GEMM")
    _print_header(print)
    rows = bench_gemm(shapes=QUICK_SHAPES if args.quick else SHAPES,
                      dtypes=tuple(args.dtype.split(",")), threads=threads,
                      blocks=args.blocks or (3 if args.quick else 7),
                      block_s=0.05 if args.quick else 0.15,
                      settle_s=0.25)
    path = write_json({"machine": info, "results": rows}, args.json, prefix="gemm-")
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
