"""Training-step benchmark: python bench/step.py [--threads 1,2] [--quick]

One SGD step (forward, loss, backward, update) of the same network, from the same weights
and data, with fastnn's compiled step (compile_step), fastnn's modules, hand-written NumPy
backprop and PyTorch autograd with
torch.optim.SGD (when torch is installed).  Contenders run in interleaved blocks with a
0.3 s pause before each (OpenBLAS's and torch's worker threads spin after their calls and
would steal the second core from the next contender), median of the blocks' per-step
times, and the ratios come from the same run.  fastnn, NumPy's BLAS and torch all get the
thread count of the row.  The full suite (more scenarios, JSON, charts) is issue #5.
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastnn as fnn

try:
    import torch
except ImportError:      # torch is optional
    torch = None


def _relu_ce_numpy(sizes, x, y, lr):
    rng = np.random.default_rng(0)
    Ws = [(rng.uniform(-1, 1, (a, b)) / np.sqrt(a)).astype(x.dtype)
          for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [np.zeros(b, x.dtype) for b in sizes[1:]]
    n = x.shape[0]
    rows = np.arange(n)

    def step():
        hs = [x]
        for i, (W, b) in enumerate(zip(Ws, bs)):
            z = hs[-1] @ W + b
            hs.append(np.maximum(z, 0) if i < len(Ws) - 1 else z)
        s = hs[-1] - hs[-1].max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.log(p[rows, y]).mean()
        d = p
        d[rows, y] -= 1
        d /= n
        for i in range(len(Ws) - 1, -1, -1):
            gW = hs[i].T @ d
            gb = d.sum(axis=0)
            if i:
                d = d @ Ws[i].T
                d *= hs[i] > 0
            Ws[i] -= lr * gW
            bs[i] -= lr * gb
        return loss
    return step


def _cs231n_numpy(x, y, w1, w2, lr):
    W = [w1.copy(), w2.copy()]

    def step():
        w1, w2 = W
        h = 1 / (1 + np.exp(-x.dot(w1)))
        y_pred = h.dot(w2)
        loss = np.square(y_pred - y).sum()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2.T)
        grad_w1 = x.T.dot(grad_h * h * (1 - h))
        w1 -= lr * grad_w1
        w2 -= lr * grad_w2
        return loss
    return step


def _fastnn(model, loss_fn, x, y, lr):
    opt = fnn.SGD(model.parameters(), lr=lr)

    def step():
        loss = loss_fn(model(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        return loss
    return step


def _compiled(model, loss_fn, x, y, lr):
    step = fnn.compile_step(model, loss_fn, fnn.SGD(model.parameters(), lr=lr))
    assert step.compiled, step.reason
    return lambda: step(x, y)


def _torch(model, loss_fn, x, y, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = loss_fn(model(tx), ty)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def scenarios(quick):
    rng = np.random.default_rng(0)
    out = []
    for dt in (np.float64, np.float32):
        x = rng.standard_normal((64, 1000)).astype(dt)
        y = rng.standard_normal((64, 10)).astype(dt)
        w1 = rng.standard_normal((1000, 100)).astype(dt)
        w2 = rng.standard_normal((100, 10)).astype(dt)
        def model():
            m = fnn.Sequential(fnn.Linear(1000, 100, bias=False, dtype=dt), fnn.Sigmoid(),
                               fnn.Linear(100, 10, bias=False, dtype=dt))
            m[0].weight.data = w1.T
            m[2].weight.data = w2.T
            return m
        c = {"numpy": _cs231n_numpy(x, y, w1, w2, 1e-4),
             "modules": _fastnn(model(), fnn.MSELoss(reduction="sum"), x, y, 1e-4),
             "compiled": _compiled(model(), fnn.MSELoss(reduction="sum"), x, y, 1e-4)}
        if torch is not None:
            tm = torch.nn.Sequential(torch.nn.Linear(1000, 100, bias=False), torch.nn.Sigmoid(),
                                     torch.nn.Linear(100, 10, bias=False)).to(
                torch.float64 if dt == np.float64 else torch.float32)
            c["torch"] = _torch(tm, lambda p, t: ((p - t) ** 2).sum(), x, y, 1e-4)
        out.append((f"CS231n 64x1000-100-10 sigmoid MSE {np.dtype(dt).name}", c, 40))
    nets = [((2, 64, 64, 3), 32, 300)]
    if not quick:
        nets.append(((784, 512, 512, 10), 128, 10))
    for sizes, batch, reps in nets:
        x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], batch)
        def model():
            layers = []
            for i in range(len(sizes) - 1):
                layers.append(fnn.Linear(sizes[i], sizes[i + 1], rng=i))
                if i < len(sizes) - 2:
                    layers.append(fnn.ReLU())
            return fnn.Sequential(*layers)
        c = {"numpy": _relu_ce_numpy(sizes, x, y, 1e-2),
             "modules": _fastnn(model(), fnn.CrossEntropyLoss(), x, y, 1e-2),
             "compiled": _compiled(model(), fnn.CrossEntropyLoss(), x, y, 1e-2)}
        if torch is not None:
            tl = []
            for i in range(len(sizes) - 1):
                tl.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    tl.append(torch.nn.ReLU())
            c["torch"] = _torch(torch.nn.Sequential(*tl), torch.nn.CrossEntropyLoss(), x, y,
                                1e-2)
        name = "-".join(map(str, sizes))
        out.append((f"{name} ReLU softmax-CE batch {batch} float32", c, reps))
    return out


@np.errstate(over="ignore")      # the lecture's randn weights saturate sigmoid in float32
def run(threads, quick):
    blocks = 3 if quick else 7
    print(f"fastnn {fnn.__version__}, kernel {fnn.get_kernel_variant()}; µs per training "
          f"step, median of {blocks} interleaved blocks (min-max)")
    for nt in threads:
        fnn.set_num_threads(nt)
        if torch is not None:
            torch.set_num_threads(nt)
        with threadpool_limits(nt):
            for name, contenders, reps in scenarios(quick):
                times = {k: [] for k in contenders}
                for f in contenders.values():         # warm-up
                    for _ in range(3):
                        f()
                for _ in range(blocks):
                    for k, f in contenders.items():
                        time.sleep(0.3)
                        t = time.perf_counter()
                        for _ in range(reps):
                            f()
                        times[k].append((time.perf_counter() - t) / reps * 1e6)
                med = {k: float(np.median(v)) for k, v in times.items()}
                cols = "  ".join(f"{k} {med[k]:8.1f} ({min(v):.0f}-{max(v):.0f})"
                                 for k, v in times.items())
                ratios = "  ".join(f"{k}/compiled {med[k] / med['compiled']:.2f}"
                                   for k in med if k != "compiled")
                print(f"{nt} thr | {name:<48} | {cols} | {ratios}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    run([int(t) for t in a.threads.split(",")], a.quick)
