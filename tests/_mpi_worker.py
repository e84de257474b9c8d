"""The program tests/test_distributed.py runs under ``mpiexec -n N`` (and imports for the
single-process references): ``python _mpi_worker.py MODE OUT [options]``.

Modes: ``train`` (fit, then rank 0 writes the parameters, the history and whether every
rank holds the same parameters to OUT.npz), ``prims`` (broadcast_parameters and
allreduce_gradients checked on every rank), ``raise`` / ``hang`` / ``die`` (rank 1 raises,
sleeps, or exits at its third step: the job must stop, not hang), ``mismatch`` (rank 1's
data has one row less: every rank refuses it).
"""
import argparse
import os
import sys
import time

import numpy as np

import fastnn


def build(dtype, seed, opt):
    """The test network (a Linear-ReLU-Linear-Tanh-Linear chain), its optimizer and data."""
    rng = np.random.default_rng(seed)
    model = fastnn.Sequential(fastnn.Linear(6, 16), fastnn.ReLU(), fastnn.Linear(16, 12),
                              fastnn.Tanh(), fastnn.Linear(12, 4)).to(dtype)
    for p in model.parameters():
        p.data = rng.uniform(-0.5, 0.5, p.shape)
    if opt == "adam":
        optimizer = fastnn.Adam(model.parameters(), lr=0.01)
    else:
        optimizer = fastnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, optimizer


def data(dtype, n=203, nval=37):
    rng = np.random.default_rng(1234)
    X = rng.standard_normal((n + nval, 6)).astype(dtype)
    y = (np.abs(X[:, :4]).argmax(axis=1) + (X[:, 4] > 1)) % 4
    return (X[:n], y[:n]), (X[n:], y[n:])


class _Fault(fastnn.Callback):
    def __init__(self, mode, r):
        self.mode, self.r = mode, r

    def on_batch_end(self, trainer, step):
        if self.r != 1 or step != 3:
            return
        if self.mode == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        if self.mode == "hang":
            time.sleep(120)
        if self.mode == "die":
            os._exit(3)


def early_stopping():
    """Stops after the second epoch (nothing improves by 10): every rank must agree."""
    return fastnn.EarlyStopping("val_loss", patience=1, min_delta=10.0)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--opt", default="sgd")
    ap.add_argument("--exact", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clip", type=float, default=None)
    ap.add_argument("--compiled", type=int, default=1)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--early", type=int, default=0)
    a = ap.parse_args(argv)
    from fastnn import distributed as dist
    dist.init(timeout=a.timeout)
    r, n = dist.rank(), dist.world_size()
    fastnn.set_num_threads(a.threads)
    dt = np.dtype(a.dtype)
    if a.mode == "prims":
        return prims(dist, r, n, dt, a.out)
    # rank-dependent initial weights: fit's broadcast must give every rank rank 0's
    model, opt = build(dt, 7 + r, a.opt)
    (X, y), val = data(dt)
    tr = dist.DistributedTrainer(model, fastnn.CrossEntropyLoss(), opt, batch_size=a.bs,
                                 epochs=a.epochs, seed=5, exact=bool(a.exact),
                                 chunk_size=a.chunk, progress=False,
                                 compiled=bool(a.compiled), clip_grad_norm=a.clip,
                                 checkpoint=a.checkpoint)
    if a.resume:
        tr.resume(a.resume)
    cbs = [] if a.mode in ("train", "mismatch") else [_Fault(a.mode, r)]
    if a.early:
        cbs.append(early_stopping())
    if a.mode == "mismatch" and r == 1:     # this rank's data differ: refused on every rank
        X, y = X[:-1], y[:-1]
    hist = tr.fit(X, y, validation_data=val, callbacks=cbs)
    params = [p.data.copy() for p in model.parameters()]
    gathered = dist._comm().gather(params, root=0)
    if r == 0:
        same = all(all(np.array_equal(u, v) for u, v in zip(params, g)) for g in gathered)
        np.savez(a.out, *params, same=same, world=n, epochs=np.array(hist.epochs),
                 **{"h_" + k: np.array(v) for k, v in hist.history.items()
                    if k not in ("time", "samples_per_s")})
    return 0


def prims(dist, r, n, dt, out):
    model, _ = build(dt, 100 + r, "sgd")
    dist.broadcast_parameters(model, root=n - 1)
    ref, _ = build(dt, 100 + n - 1, "sgd")
    ok = [all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(),
                                                             ref.parameters()))]
    ps = list(model.parameters())
    for i, p in enumerate(ps):
        p.grad = np.full(p.shape, (r + 1) * (i + 1), dt)
    gb = dist.allreduce_gradients(model)
    mean = sum(range(1, n + 1)) / n
    ok.append(all(np.array_equal(p.grad, np.full(p.shape, mean * (i + 1), dt))
                  for i, p in enumerate(ps)))
    # the gradients are views into one flat buffer: nothing is packed
    buf = gb.buffers[dt]
    ok.append(all(np.shares_memory(p.grad, buf) for p in ps) and
              buf.size == sum(p.size for p in ps))
    # a sum without averaging; a stale (zeroed) gradient counts as zero
    ps[0].zero_grad()
    for i, p in enumerate(ps[1:], 1):
        p.grad = np.full(p.shape, float(r), dt)
    dist.allreduce_gradients(model, average=False)
    ok.append(np.array_equal(ps[0].grad, np.zeros(ps[0].shape, dt)) and
              all(np.array_equal(p.grad, np.full(p.shape, n * (n - 1) / 2, dt))
                  for p in ps[1:]))
    try:           # mismatched parameters are refused on every rank, not exchanged
        dist.broadcast_parameters(ps[:1] if r == 0 else ps[:2])
        ok.append(n == 1)
    except ValueError as e:
        ok.append("disagree" in str(e))
    allok = dist._comm().allreduce(int(all(ok)), op=dist._mpi().MIN)
    if r == 0:
        np.savez(out, ok=np.array(ok), allok=allok, world=n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
