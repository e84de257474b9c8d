"""The optimizer update alone: python -m bench.optim [--threads 1,2] [--blocks 7] [--json P]

(run from the repository root)  Times ``optimizer.step()`` -- no forward or backward -- on
the parameters of a 784-512-512-10 network (669,706 float32 values in 6 arrays) for
fastnn's SGD (momentum 0.9), Adam, AdamW and RMSprop, and for torch.optim.SGD / Adam in
its default, foreach and fused forms when torch is installed; the contenders take turns
block by block, median of the blocks.  The ratio column is each update's time over
fastnn's SGD update's, the figure the Adam kernel is held to (within 1.3x).
"""
import argparse
import statistics
import time

import numpy as np

import fastnn as fnn
from bench.run import _Threads, _optional, cpu_model, write_json

SIZES = (784, 512, 512, 10)


def _params(dtype):
    rng = np.random.default_rng(0)
    ps = []
    for k, n in zip(SIZES[:-1], SIZES[1:]):
        for shape in ((n, k), (n,)):
            p = fnn.Parameter(rng.standard_normal(shape).astype(dtype))
            p.grad[...] = rng.standard_normal(shape).astype(dtype) * 1e-2
            ps.append(p)
    return ps


def contenders(torch, dtype=np.float32):
    out = {}
    for name, make in (("fastnn SGD", lambda ps: fnn.SGD(ps, lr=1e-3, momentum=0.9)),
                       ("fastnn Adam", lambda ps: fnn.Adam(ps)),
                       ("fastnn AdamW", lambda ps: fnn.AdamW(ps)),
                       ("fastnn RMSprop", lambda ps: fnn.RMSprop(ps))):
        opt = make(_params(dtype))
        out[name] = opt.step
    if torch is not None:
        for name, cls, kw in (("torch SGD", torch.optim.SGD, dict(lr=1e-3, momentum=0.9)),
                              ("torch Adam", torch.optim.Adam, {}),
                              ("torch Adam foreach", torch.optim.Adam, dict(foreach=True)),
                              ("torch Adam fused", torch.optim.Adam, dict(fused=True))):
            ts = []
            for p in _params(dtype):
                t = torch.tensor(p.data, requires_grad=True)
                t.grad = torch.tensor(p.grad)
                ts.append(t)
            try:
                opt = cls(ts, **kw)
                opt.step()
            except (RuntimeError, ValueError, TypeError):
                continue
            out[name] = opt.step
    return out


def measure(fns, nt, torch, blocks=7, block_s=0.2):
    reps = {}
    for k, f in fns.items():
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.05:
            f()
            n += 1
        reps[k] = max(1, round(block_s / ((time.perf_counter() - t0) / n)))
    times = {k: [] for k in fns}
    names = list(fns)
    with _Threads(nt, torch):
        for b in range(blocks):
            for k in names[b % len(names):] + names[:b % len(names)]:
                f, r = fns[k], reps[k]
                t0 = time.perf_counter()
                for _ in range(r):
                    f()
                times[k].append((time.perf_counter() - t0) / r * 1e6)
    base = statistics.median(times["fastnn SGD"])
    return {k: {"median_us": statistics.median(v), "min_us": min(v), "max_us": max(v),
                "ratio_to_fastnn_sgd": statistics.median(v) / base} for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--blocks", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch = _optional("torch")
    cfg = fnn.config()
    print(f"{cpu_model()} | kernel {cfg['kernel_variant']} | float32 | "
          f"{sum(p.size for p in _params(np.float32))} values")
    doc = {"cpu": cpu_model(), "kernel_variant": cfg["kernel_variant"], "results": {}}
    for nt in [int(t) for t in args.threads.split(",")]:
        fnn.set_num_threads(nt)
        res = measure(contenders(torch), nt, torch, args.blocks)
        doc["results"][nt] = res
        print(f"\n{nt} thread(s)   median µs/update   min      max    vs fastnn SGD")
        for k, r in res.items():
            print(f"  {k:<20}{r['median_us']:>10.1f}{r['min_us']:>9.1f}{r['max_us']:>9.1f}"
                  f"{r['ratio_to_fastnn_sgd']:>10.2f}")
    print(f"wrote {write_json(doc, args.json, prefix='optim-')}")
    return doc


if __name__ == "__main__":
    main()
