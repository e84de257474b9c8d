"""fastnn.distributed: data-parallel training across processes and machines over MPI.

Horovod's recipe: the initial weights are broadcast from rank 0, every rank takes its slice
of each global minibatch, the gradients are all-reduced in one flat buffer per dtype (the
parameters' ``.grad`` arrays are views into it, so nothing is packed), and every rank
applies the same update.  Launch with ``mpiexec -n 4 python train.py`` (or ``srun``).

Needs ``mpi4py`` and an MPI library (``pip install "fastnn[mpi]"``: mpi4py and the MPICH
wheel, which brings ``mpiexec``); importing fastnn never imports it, and mpi4py is
imported on the first use of this module's functions.

Every collective operation here is non-blocking underneath and waited for with a timeout
(``init(timeout=...)``, default 600 s): a rank that died or hangs makes the others raise a
TimeoutError instead of blocking forever, and ``init`` makes an uncaught exception on any
rank call ``MPI.Comm.Abort`` so the whole job stops with a non-zero exit status.

Arithmetic (see README "Distributed training"): a run on N ranks with global batch B gives
the parameters of one process with batch B up to the reordering of the gradient sum
(``exact=False``); with ``exact=True`` the batch sums are taken over fixed row chunks
combined in chunk order along the ranks, and N ranks are bitwise identical to one process
(any N, any thread count).
"""
from __future__ import annotations

import os
import sys
import time
import weakref

from typing import Any, Sequence

import numpy as np

from ._typing import ArrayLike, PathLike
from .io import load_checkpoint, save_checkpoint
from .nn.utils import clip_grad_norm_
from .training.callbacks import Callback
from .training.compiled import module_grads
from .training.trainer import Trainer

__all__ = ["init", "rank", "world_size", "broadcast_parameters", "allreduce_gradients",
           "GradBuffer", "DistributedTrainer"]

_INSTALL = 'pip install "fastnn[mpi]"'


class _State:
    MPI = None
    comm = None
    timeout = 600.0
    hook = None


def _mpi():
    if _State.MPI is None:
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ImportError(f"fastnn.distributed needs mpi4py and an MPI library: "
                              f"{_INSTALL} (mpi4py and the MPICH wheel, which brings "
                              f"mpiexec); {e}") from None
        _State.MPI = MPI
    return _State.MPI


_ABORT_GRACE_S = 1.0


def _abort_hook(etype, value, tb):
    """sys.excepthook while distributed: print the traceback, then abort every rank (the
    others would otherwise wait in a collective operation until their timeout)."""
    prev = _State.hook or sys.__excepthook__
    try:
        sys.stderr.write(f"fastnn.distributed: uncaught exception on rank "
                         f"{_State.comm.Get_rank()} of {_State.comm.Get_size()}; aborting "
                         "the job\n")
        prev(etype, value, tb)
        sys.stderr.flush()
        sys.stdout.flush()
        # let mpiexec forward what was just written: Abort kills every process at once,
        # and on a loaded machine the tail of the traceback (the message) was lost
        time.sleep(_ABORT_GRACE_S)
    finally:
        _State.MPI.COMM_WORLD.Abort(1)


def init(comm: Any = None, timeout: float = 600.0, abort_on_exception: bool = True) -> Any:
    """Start (or join) the MPI job (collective: call it on every rank).  Later calls update
    the settings; the other functions call it with the defaults when it was not called.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The ranks to train over (default MPI.COMM_WORLD); a duplicate of it becomes the
        communicator of this module's functions.
    timeout : float, optional
        Seconds (> 0) after which a wait in a collective operation raises TimeoutError.
    abort_on_exception : bool, optional
        Install a sys.excepthook that calls MPI.Comm.Abort on an uncaught exception, so
        the whole job stops instead of the other ranks waiting.

    Returns
    -------
    mpi4py.MPI.Comm
        The communicator in use.
    """
    MPI = _mpi()
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"fastnn.distributed.init: timeout must be > 0 seconds, got "
                         f"{timeout}")
    if comm is not None and not isinstance(comm, MPI.Comm):
        raise TypeError(f"fastnn.distributed.init: comm must be an mpi4py Comm, got "
                        f"{type(comm).__name__}")
    if comm is not None or _State.comm is None:
        # a duplicate: fastnn's messages never match the application's own
        _State.comm = (comm if comm is not None else MPI.COMM_WORLD).Dup()
    _State.timeout = timeout
    if abort_on_exception and sys.excepthook is not _abort_hook:
        _State.hook, sys.excepthook = sys.excepthook, _abort_hook
    elif not abort_on_exception and sys.excepthook is _abort_hook:
        sys.excepthook, _State.hook = _State.hook or sys.__excepthook__, None
    return _State.comm


def _comm():
    return _State.comm if _State.comm is not None else init()


def rank() -> int:
    """This process's rank.

    Returns
    -------
    int
        0 .. world_size() - 1.
    """
    return _comm().Get_rank()


def world_size() -> int:
    """The number of processes of the job.

    Returns
    -------
    int
    """
    return _comm().Get_size()


def _wait(req, what):
    """Wait for a non-blocking MPI request, raising TimeoutError after the timeout."""
    if req.Test():
        return
    t0 = time.monotonic()
    deadline = t0 + _State.timeout
    while not req.Test():
        now = time.monotonic()
        if now > deadline:
            c = _comm()
            raise TimeoutError(
                f"fastnn.distributed: rank {c.Get_rank()} of {c.Get_size()}: {what} did not "
                f"complete within {_State.timeout:g} s; another rank has probably died, "
                "raised or is stuck (init(timeout=...) sets the limit)")
        if now - t0 < 1.0:            # spin (as MPI's blocking calls do), yielding the
            os.sched_yield()          # core to a runnable process; after 1 s, poll slowly
        else:
            time.sleep(1e-3)


def _allreduce(buf, what, op=None):
    MPI = _mpi()
    _wait(_comm().Iallreduce(MPI.IN_PLACE, buf, op or MPI.SUM), what)
    return buf


def _bcast(buf, root, what):
    _wait(_comm().Ibcast(buf, root=root), what)
    return buf


def _agree(who, values, what):
    """Check that every rank passed the same integers (a mismatch would make collective
    operations exchange buffers of different sizes)."""
    MPI = _mpi()
    v = np.asarray(values, np.int64)
    lo, hi = v.copy(), v.copy()
    _allreduce(lo, f"{who}: the agreement check", MPI.MIN)
    _allreduce(hi, f"{who}: the agreement check", MPI.MAX)
    if not np.array_equal(lo, hi):
        raise ValueError(f"{who}: the ranks disagree on {what}: this rank has "
                         f"{v.tolist()}, the minimum over ranks is {lo.tolist()}, the "
                         f"maximum {hi.tolist()}")


def _unique_params(model_or_params, who):
    from .nn import Module, Parameter
    if isinstance(model_or_params, Module):
        ps = [p for _, p in model_or_params.named_parameters()]
    else:
        ps = list(model_or_params)
    out, seen = [], set()
    for p in ps:
        if not isinstance(p, Parameter):
            raise TypeError(f"{who}: expected a fastnn Module or Parameters, got a "
                            f"{type(p).__name__}")
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _signature(params):
    """A 63-bit hash of the parameters' shapes and dtypes (for the agreement check)."""
    h = 1469598103934665603
    for p in params:
        for v in (*p.shape, -1, p.dtype.itemsize, -2):
            h = ((h ^ (v & 0xFFFFFFFF)) * 1099511628211) & ((1 << 63) - 1)
    return h


def broadcast_parameters(model: Any, root: int = 0) -> None:
    """Copy the parameters on rank ``root`` to every rank (collective; the ranks' shapes
    and dtypes are checked to agree first).

    Parameters
    ----------
    model : Module or list of Parameter
        Whose parameters (each shared one once).
    root : int, optional
        The rank whose values everyone gets.
    """
    who = "fastnn.distributed.broadcast_parameters"
    ps = _unique_params(model, who)
    c = _comm()
    if not 0 <= root < c.Get_size():
        raise ValueError(f"{who}: root must be a rank in [0, {c.Get_size()}), got {root!r}")
    _agree(who, [len(ps), _signature(ps)], "the parameters' number, shapes and dtypes")
    for p in ps:
        _bcast(p.data, root, who)


class GradBuffer:
    """One flat contiguous gradient buffer per dtype for ``params``: each parameter's
    ``.grad`` becomes a view into it (keeping its value), so all gradients of a dtype are
    all-reduced in one call without packing.  ``buffers``: {dtype: 1-D array}.  Compiled
    steps planned before re-plan on their next call (they point at the gradient arrays).

    Parameters
    ----------
    params : list of Parameter
        The parameters (each once), in buffer order.
    """

    def __init__(self, params: Sequence[Any]) -> None:
        self.params = list(params)
        sizes = {}
        for p in self.params:
            sizes[p.dtype] = sizes.get(p.dtype, 0) + p.size
        self.buffers = {dt: np.zeros(n, dt) for dt, n in sizes.items()}
        off = dict.fromkeys(sizes, 0)
        self._views = []
        for p in self.params:
            o = off[p.dtype]
            v = self.buffers[p.dtype][o:o + p.size].reshape(p.shape)
            off[p.dtype] = o + p.size
            p._share_grad(v)
            self._views.append(v)

    def bound(self) -> bool:
        """Whether every parameter's gradient is still its view (a dtype conversion or a
        new array unbinds it).

        Returns
        -------
        bool
        """
        return all(p._grad is v for p, v in zip(self.params, self._views))

    def materialize(self) -> None:
        """Give every gradient its logical value in the buffer (stale ones: zero)."""
        for p in self.params:
            p._materialize_grad()


_BUFFERS = weakref.WeakKeyDictionary()


def _grad_buffer(model, who):
    ps = _unique_params(model, who)
    key = model if not isinstance(model, (list, tuple)) else None
    gb = _BUFFERS.get(key) if key is not None else None
    if gb is None or gb.params != ps or not gb.bound():
        gb = GradBuffer(ps)
        if key is not None:
            _BUFFERS[key] = gb
    return gb


def allreduce_gradients(model: Any, average: bool = True) -> GradBuffer:
    """Sum the gradients over all ranks in place (collective): one all-reduce per dtype
    over the flat buffer the gradients are views into (bound on the first call for a
    Module and kept; a list of Parameters is bound on every call).

    Parameters
    ----------
    model : Module or list of Parameter
        Whose gradients (each shared parameter once).
    average : bool, optional
        Divide by world_size() (Horovod's default), else the plain sum.

    Returns
    -------
    GradBuffer
        The buffers the gradients are views into.
    """
    who = "fastnn.distributed.allreduce_gradients"
    gb = _grad_buffer(model, who)
    gb.materialize()
    n = world_size()
    for buf in gb.buffers.values():
        _allreduce(buf, who)
        if average and n > 1:
            buf *= buf.dtype.type(1.0 / n)
    return gb


class _Agreement(Callback):
    """Runs last at each epoch's end: every rank stops when any rank's callbacks asked to
    (EarlyStopping sees the same reduced logs on every rank; this makes it certain)."""

    def on_epoch_end(self, trainer, epoch, logs):
        f = np.array([1 if trainer.stop_training else 0], np.int64)
        _allreduce(f, "DistributedTrainer: the stop decision", _mpi().MAX)
        trainer.stop_training = bool(f[0])


class _CheckpointWriter(Callback):
    def __init__(self, path, every):
        self.path, self.every = path, every

    def on_epoch_end(self, trainer, epoch, logs):
        if trainer.rank == 0 and (epoch % self.every == 0 or trainer.stop_training):
            trainer.save_checkpoint(self.path)


class DistributedTrainer(Trainer):
    """``Trainer`` data-parallel over the ranks of an MPI job (construct and ``fit`` on
    every rank with the same data, model architecture, optimizer and arguments).

    Each epoch's permutation comes from ``seed`` (the same on every rank); of every global
    minibatch of B rows (the last may be smaller, M rows), rank r computes the gradient of
    rows [r*M//N, (r+1)*M//N) and the all-reduce gives the gradient of the global mean loss
    (each rank's mean-loss gradient weighted by its share of the rows); then every rank
    applies the same update.  The epoch's loss, accuracy and validation metrics are reduced
    over the ranks (validation rows are split over them), so every rank logs the same
    values and callbacks (EarlyStopping) decide alike; the stop decision is reduced too.
    Only rank 0 shows a progress bar and writes ``checkpoint`` (a path: every
    ``checkpoint_every`` epochs and when training stops, atomically, via
    fastnn.save_checkpoint); ``resume(path)`` continues from one on any number of ranks.

    ``exact=True``: the batch sums of the gradient are taken over fixed chunks of
    ``chunk_size`` rows (each chunk's gradient computed alone, chunks added in order
    along the ranks: rank r receives the running sum from rank r-1, adds its chunks and
    passes it on; the last rank broadcasts it), so the parameters are bitwise identical to
    one process with exact=True for any number of ranks and threads; rank r then computes
    the chunks [r*C//N, (r+1)*C//N) of the batch's C chunks (equal to the row split when N
    divides C).  It costs smaller GEMMs and a chain of N-1 sends instead of one all-reduce
    (see the README).  Per-step callbacks (on_batch_end) run after every step;
    ``sample_weight`` is not supported.  ``evaluate`` is collective too (call it on every
    rank); ``predict`` is local.

    Parameters
    ----------
    model : Module
        The network (the same architecture on every rank; rank 0's weights are used).
    loss_fn : Loss
        The loss.
    optimizer : Optimizer
        The optimizer over (some of) the model's parameters.
    exact : bool, optional
        Chunked, rank-count-independent gradient sums (bitwise equal to one process).
    chunk_size : int, optional
        Rows per chunk of the exact mode (>= 1).
    checkpoint : path, optional
        Where rank 0 writes a checkpoint after every ``checkpoint_every`` epochs.
    checkpoint_every : int, optional
        Epochs between checkpoints (>= 1).
    **kwargs
        Trainer's options: batch_size (the global batch), epochs, shuffle, seed, progress,
        compiled, clip_grad_norm.
    """

    def __init__(self, model: Any, loss_fn: Any, optimizer: Any, *, exact: bool = False,
                 chunk_size: int = 64, checkpoint: PathLike | None = None,
                 checkpoint_every: int = 1, **kwargs: Any) -> None:
        super().__init__(model, loss_fn, optimizer, **kwargs)
        for name, v in (("chunk_size", chunk_size), ("checkpoint_every", checkpoint_every)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"DistributedTrainer: {name} must be an int >= 1, got {v!r}")
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"DistributedTrainer: checkpoint must be a path or None, got "
                            f"{type(checkpoint).__name__}")
        self.exact, self.chunk_size = bool(exact), int(chunk_size)
        self.checkpoint, self.checkpoint_every = checkpoint, int(checkpoint_every)
        self.rank, self.world_size = rank(), world_size()
        if self.rank != 0:
            self.progress = False
        self._gb = None

    # -- the flat gradient buffer and the step (planned after the buffer is bound)
    def _bind(self):
        gb = self._gb
        ps = _unique_params(self.model, "DistributedTrainer")
        if gb is None or gb.params != ps or not gb.bound():
            self._gb = GradBuffer(ps)
            self._acc = {dt: np.empty_like(b) for dt, b in self._gb.buffers.items()}
            self._step = None          # it pointed at the old gradient arrays
        return self._gb

    def _get_step(self):
        if not self.compiled:
            return None
        return super()._get_step()

    # -- checkpoints
    def save_checkpoint(self, path: PathLike) -> None:
        """Write the model, the optimizer's state, the epoch and the history (atomically;
        call it on one rank).

        Parameters
        ----------
        path : path
            The .npz file (fastnn.save_checkpoint).
        """
        h = self.history
        save_checkpoint(path, self.model, self.optimizer, epoch=self.epoch,
                        history=h.history, history_epochs=h.epochs)

    def resume(self, path: PathLike) -> Any:
        """Restore model, optimizer, epoch and history from a checkpoint written by this
        trainer (every rank reads path, e.g. on a shared file system); the next fit
        continues with the next epoch, on any number of ranks.

        Parameters
        ----------
        path : path
            A checkpoint written by ``save_checkpoint`` (or the ``checkpoint`` option).

        Returns
        -------
        Checkpoint
            What fastnn.load_checkpoint returned.
        """
        ck = load_checkpoint(path, self.model, self.optimizer)
        self.epoch = int(ck.epoch or 0)
        self.history.history = {k: list(v) for k, v in ck.extra.get("history", {}).items()}
        self.history.epochs = list(ck.extra.get("history_epochs", []))
        return ck

    # -- training
    def fit(self, X: ArrayLike, y: ArrayLike,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None,
            callbacks: Sequence[Callback] | None = None,
            sample_weight: ArrayLike | None = None) -> Any:
        """Trainer.fit on every rank (collective; the same data everywhere); see the class
        docstring.

        Parameters
        ----------
        X : array_like
            The inputs, (n, in_features), in the model's dtype (all n rows, every rank).
        y : array_like
            Integer labels (n,) or targets of the output's shape.
        validation_data : (X_val, y_val), optional
            Evaluated after each epoch, its rows split over the ranks.
        callbacks : list of Callback, optional
            Hooks run during training (on every rank, with the same logs).
        sample_weight : None
            Not supported (NotImplementedError).

        Returns
        -------
        History
        """
        if sample_weight is not None:
            raise NotImplementedError("DistributedTrainer.fit: sample_weight is not "
                                      "supported (use Trainer)")
        shape = X.shape if isinstance(X, np.ndarray) and X.ndim == 2 else (-1, -1)
        _agree("DistributedTrainer.fit", [shape[0], shape[1],
               self.batch_size, self.seed % (1 << 62), self.epoch, self.epochs,
               int(self.shuffle), int(self.exact), self.chunk_size],
               "(n samples, features, batch_size, seed, epoch, epochs, shuffle, exact, "
               "chunk_size)")
        self._bind()
        broadcast_parameters(self.model, 0)
        cbs = list(callbacks or []) + [_Agreement()]
        if self.checkpoint is not None:
            cbs.append(_CheckpointWriter(self.checkpoint, self.checkpoint_every))
        return super().fit(X, y, validation_data, cbs)

    def _epoch(self, step, X, y, perm, steps, losses, correct, bar, e, batch_cbs, sw=None,
               sizes=None, interrupts=None):
        n, bs = X.shape[0], self.batch_size
        mean = self.loss_fn.reduction == "mean"
        stats = np.empty(3, np.float64)
        for s in range(steps):
            lo = s * bs
            M = min(n, lo + bs) - lo
            if self.exact:
                self._exact_grads(step, X, y, perm[lo:lo + M], M, mean, stats)
            else:
                self._plain_grads(step, X, y, perm[lo:lo + M], M, mean, stats)
            if stats[2]:
                self._nonfinite(stats[0] / M if mean else stats[0], e, s, steps)
            if self.clip_grad_norm is not None:
                clip_grad_norm_(self.optimizer.params, self.clip_grad_norm)
            self.optimizer.step()
            losses[s] = stats[0] / M if mean else stats[0]
            correct[s] = int(stats[1])
            if bar is not None:
                bar.update(M)
                bar.set_postfix(loss=f"{losses[s]:.4g}", refresh=False)
            for cb in batch_cbs:
                cb.on_batch_end(self, s + 1)
            if interrupts is not None and s + 1 < steps:
                # a KeyboardInterrupt between steps (Trainer.fit's rule); on one rank it
                # stops the job through the abort hook (the others would wait for it)
                interrupts.check()

    def _local(self, step, X, y, idx, cnt):
        """Forward and backward of rows idx of X, y; returns the loss."""
        xb, yb = X[idx], y[idx]
        if step is not None:
            return step.grads(xb, yb, cnt)
        return module_grads(self.model, self.loss_fn, self.optimizer, xb, yb, cnt)

    def _plain_grads(self, step, X, y, rows, M, mean, stats):
        """This rank's slice of the batch, then the all-reduce: the gradient of the batch's
        loss in the flat buffers; stats = (the batch's loss sum or sum of rank means
        weighted by rows, correct count, non-finite flag), reduced over the ranks."""
        gb, r, N = self._gb, self.rank, self.world_size
        a, b = r * M // N, (r + 1) * M // N
        m = b - a
        cnt = np.zeros(1, np.int64)
        if m:
            loss = self._local(step, X, y, rows[a:b], cnt)
        else:                           # fewer rows than ranks: this rank adds nothing
            for p in gb.params:
                p.zero_grad()
            loss = 0.0
        gb.materialize()
        stats[:] = (loss * m if mean else loss, cnt[0], 0.0 if np.isfinite(loss) else 1.0)
        _allreduce(stats, "DistributedTrainer: the loss all-reduce")
        if stats[2]:
            return
        for buf in gb.buffers.values():
            if mean and m != M:
                buf *= buf.dtype.type(m / M)
            if N > 1:
                _allreduce(buf, "DistributedTrainer: the gradient all-reduce")

    def _exact_grads(self, step, X, y, rows, M, mean, stats):
        """exact=True: chunk gradients in a fixed order along the ranks (class docstring).
        The running sum arrives from rank r-1 while this rank computes its chunks; chunks
        done before it arrives are kept and added, in order, once it has.  Mean loss: the
        batch gradient is (c/M) * sum_j w_j g_j, g_j chunk j's mean gradient, w_j = m_j/c (1
        but for a short last chunk), so full chunks are added unscaled."""
        gb, r, N, c = self._gb, self.rank, self.world_size, self.chunk_size
        comm = _comm()
        what = "DistributedTrainer: the exact gradient chain"
        C = -(-M // c)
        j0, j1 = r * C // N, (r + 1) * C // N
        accs = [self._acc[dt] for dt in gb.buffers]
        bufs = list(gb.buffers.values())
        # some lower rank holds chunks: continue its sum (else this rank starts it)
        reqs = [comm.Irecv(acc, source=r - 1, tag=17) for acc in accs] if j0 > 0 else []
        ready, started, kept = not reqs, bool(reqs), 0
        parts = self._parts(j1 - j0) if reqs else None
        cnt = np.zeros(1, np.int64)
        tot, hits, bad = 0.0, 0, False
        for j in range(j0, j1):
            a, b = j * c, min(M, (j + 1) * c)
            loss = self._local(step, X, y, rows[a:b], cnt)
            gb.materialize()
            if not np.isfinite(loss):
                bad = True
                break
            tot += loss * (b - a) if mean else loss
            hits += int(cnt[0])
            if mean and C > 1 and b - a != c:     # a short last chunk: weight m_j / c
                for buf in bufs:
                    buf *= buf.dtype.type((b - a) / c)
            if not ready and all(q.Test() for q in reqs):
                ready = True
                self._fold(accs, parts, kept)
                kept = 0
            if not ready:
                for i, buf in enumerate(bufs):
                    parts[i][kept] = buf
                kept += 1
            elif started:
                for acc, buf in zip(accs, bufs):
                    acc += buf
            else:
                for acc, buf in zip(accs, bufs):
                    acc[...] = buf
                started = True
        stats[:] = (tot, hits, 1.0 if bad else 0.0)
        _allreduce(stats, "DistributedTrainer: the loss all-reduce")
        if stats[2]:
            for q in reqs:                 # no rank sends this step: withdraw the receives
                if not q.Test():
                    q.Cancel()
                    q.Wait()
            return
        if not ready:
            for q in reqs:
                _wait(q, what)
            self._fold(accs, parts, kept)
        for acc, buf in zip(accs, bufs):
            if r < N - 1 and j1 > 0:
                _wait(comm.Isend(acc, dest=r + 1, tag=17), what)
            if N > 1:
                _bcast(acc, N - 1, what)
            if mean and C > 1:                    # the mean over the batch: * c / M
                np.multiply(acc, buf.dtype.type(c / M), out=buf)
            else:
                buf[...] = acc
        gb.materialize()

    @staticmethod
    def _fold(accs, parts, kept):
        for i, acc in enumerate(accs):
            for k in range(kept):
                acc += parts[i][k]

    def _parts(self, k):
        """Per dtype (buffer order), k gradient-sized rows for chunk gradients kept until
        the running sum arrives."""
        sizes = [b.size for b in self._gb.buffers.values()]
        have = getattr(self, "_part_bufs", None)
        if have is None or len(have) != len(sizes) or any(
                v.shape[0] < k or v.shape[1] != n for v, n in zip(have, sizes)):
            have = self._part_bufs = [np.empty((max(k, 1), b.size), b.dtype)
                                      for b in self._gb.buffers.values()]
        return have

    # -- evaluation: validation rows split over the ranks, sums reduced
    def _evaluate(self, X, y):
        n, r, N = X.shape[0], self.rank, self.world_size
        a, b = r * n // N, (r + 1) * n // N
        clf = self._classification()
        part = np.zeros(2, np.float64)
        if b > a:
            res = super()._evaluate(X[a:b], y[a:b])
            part[0] = res["loss"] * (b - a)
            if clf:
                part[1] = round(res["accuracy"] * (b - a))
        _allreduce(part, "DistributedTrainer: the evaluation all-reduce")
        out = {"loss": float(part[0] / n)}
        if clf:
            out["accuracy"] = float(part[1] / n)
        return out
