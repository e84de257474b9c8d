"""Data-parallel benchmark: python -m bench.distributed [--ranks 1,2] [--batches 256,1024]
[--steps 12] [--repeats 5] [--chunk 32] [--quick] [--json PATH]

(run from the repository root; needs fastnn importable, e.g. PYTHONPATH=src, and mpi4py with
mpiexec: pip install "fastnn[mpi]")

784-512-512-10 ReLU, softmax cross-entropy, SGD(momentum 0.9), float32, one thread per
rank (OMP_NUM_THREADS=1), launched as ``mpiexec -n k`` for every k of --ranks.  For each
global batch B it measures, median of --repeats epochs of --steps steps each:

  trainer   the single-process fastnn.Trainer (one compiled call per epoch; 1-rank job only)
  plain     DistributedTrainer (grads-only kernel call, one all-reduce, optimizer.step())
  exact     DistributedTrainer(exact=True, chunk_size=--chunk)
  compute   one rank's forward+backward alone (CompiledStep.grads on B/k rows)
  allreduce one all-reduce of the whole gradient (2.7 MB float32), alone
  concurrent (k > 1) the compute in a thread while the main thread all-reduces another
            buffer: what overlapping backward with the all-reduce could win (printed as
            concurrent / (compute + allreduce); 1.0: nothing)

and prints steps/s, the scaling efficiency (steps/s on k ranks / (k * steps/s on 1 rank),
same global batch), the exact mode's cost (plain / exact time) and the break-even global
batch above which k ranks beat one: compute(B) * (1 - 1/k) > allreduce, i.e.
B > allreduce / ((1 - 1/k) * compute per row).  Timings on a shared machine are noisy:
repeat, and compare within one run.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

SIZES = (784, 512, 512, 10)


def _model(fastnn, seed=0):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(fastnn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(fastnn.ReLU())
    m = fastnn.Sequential(*layers)
    for p in m.parameters():
        p.data = rng.uniform(-0.05, 0.05, p.shape)
    return m, fastnn.SGD(m.parameters(), lr=0.01, momentum=0.9)


def worker(a):
    import fastnn
    from fastnn import distributed as dist
    dist.init(timeout=600)
    comm = dist._comm()
    r, k = dist.rank(), dist.world_size()
    fastnn.set_num_threads(1)
    res = {"ranks": k, "variant": fastnn.get_kernel_variant(),
           "threads": fastnn.get_num_threads(), "batches": {}}
    rng = np.random.default_rng(1)
    for B in a.batches:
        n = B * a.steps
        X = rng.standard_normal((n, SIZES[0])).astype(np.float32)
        y = rng.integers(0, SIZES[-1], n)
        row = {}

        def timed(make, fit_x=X, fit_y=y):
            tr = make()
            tr.fit(fit_x[:B * 2], fit_y[:B * 2])         # warm-up (plans, workspaces)
            ts = []
            for _ in range(a.repeats):
                comm.Barrier()
                t = time.perf_counter()
                tr.fit(fit_x, fit_y)
                ts.append(time.perf_counter() - t)
            return float(np.median(ts)) / a.steps

        common = dict(batch_size=B, epochs=1, progress=False, seed=3)
        if k == 1:
            def mk_trainer():
                m, o = _model(fastnn)
                return fastnn.Trainer(m, fastnn.CrossEntropyLoss(), o, **common)
            row["trainer"] = timed(mk_trainer)
        for mode, exact in (("plain", False), ("exact", True)):
            def mk(exact=exact):
                m, o = _model(fastnn)
                return dist.DistributedTrainer(m, fastnn.CrossEntropyLoss(), o, exact=exact,
                                               chunk_size=a.chunk, **common)
            row[mode] = timed(mk)
        # one rank's compute alone, and one all-reduce alone
        m, o = _model(fastnn)
        gb = dist.GradBuffer(list(m.parameters()))
        st = fastnn.CompiledStep(m, fastnn.CrossEntropyLoss(), o, batch_size=B)
        xb, yb = X[:B // k], y[:B // k]
        st.grads(xb, yb)
        ts = []
        for _ in range(a.repeats * 3):
            t = time.perf_counter()
            st.grads(xb, yb)
            ts.append(time.perf_counter() - t)
        row["compute"] = float(np.median(ts))
        buf = gb.buffers[np.dtype(np.float32)]
        ts = []
        for _ in range(a.repeats * 5):
            comm.Barrier()
            t = time.perf_counter()
            dist._allreduce(buf, "bench")
            ts.append(time.perf_counter() - t)
        row["allreduce"] = float(np.median(ts))
        row["grad_bytes"] = int(buf.nbytes)
        if k > 1:
            # what overlapping could win: the compute (nogil, in a thread) and an all-reduce
            # of another buffer at once, against the two one after the other
            other = buf.copy()
            ts = []
            for _ in range(a.repeats * 3):
                comm.Barrier()
                t = time.perf_counter()
                th = threading.Thread(target=st.grads, args=(xb, yb))
                th.start()
                dist._allreduce(other, "bench")
                th.join()
                ts.append(time.perf_counter() - t)
            row["concurrent"] = float(np.median(ts))
        res["batches"][str(B)] = row
    if r == 0:
        with open(a.json_out, "w") as f:
            json.dump(res, f)
    return 0


def launch(a):
    out = {}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    for k in a.ranks:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "r.json")
            cmd = ["mpiexec", "-n", str(k), sys.executable, "-m", "bench.distributed",
                   "--worker", "--json-out", path, "--batches", ",".join(map(str, a.batches)),
                   "--steps", str(a.steps), "--repeats", str(a.repeats), "--chunk",
                   str(a.chunk)]
            subprocess.run(cmd, check=True, env=env, cwd=root, timeout=1800)
            with open(path) as f:
                out[k] = json.load(f)
    one = out.get(1)
    print(f"784-512-512-10 float32 SGD, one thread per rank, kernel variant "
          f"{next(iter(out.values()))['variant']}; medians, steps/s of the global batch")
    print("| ranks | batch | Trainer (1 proc) | plain | exact | plain efficiency | "
          "exact cost | compute/rank ms | allreduce ms | concurrent / sum | break-even batch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, res in out.items():
        for B, row in res["batches"].items():
            tr = f"{1 / one['batches'][B]['trainer']:.1f}" if one else "-"
            eff = "-"
            if one and k > 1:
                eff = f"{one['batches'][B]['plain'] / (k * row['plain']):.2f}"
            per_row = (one["batches"][B]["compute"] if one else row["compute"] * k) / int(B)
            be = "-" if k == 1 else f"{row['allreduce'] / ((1 - 1 / k) * per_row):.0f}"
            ov = "-" if k == 1 else \
                f"{row['concurrent'] / (row['compute'] + row['allreduce']):.2f}"
            print(f"| {k} | {B} | {tr} | {1 / row['plain']:.1f} | {1 / row['exact']:.1f} | "
                  f"{eff} | {row['exact'] / row['plain']:.2f}x | {row['compute'] * 1e3:.2f} | "
                  f"{row['allreduce'] * 1e3:.3f} | {ov} | {be} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--batches", default="256,1024")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="2 steps, 1 repeat, batch 256")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.repeats, a.batches = 2, 1, "256"
    a.ranks = [int(v) for v in str(a.ranks).split(",")]
    a.batches = [int(v) for v in str(a.batches).split(",")]
    return worker(a) if a.worker else launch(a)


if __name__ == "__main__":
    sys.exit(main())
