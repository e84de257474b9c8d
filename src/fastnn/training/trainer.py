"""Trainer: minibatch training through the compiled step, and its History."""
from __future__ import annotations

import math
import sys
import time
from typing import Sequence

import numpy as np

from .. import _checks
from ..losses import CrossEntropyLoss, Loss, NLLLoss, SVMLoss
from ..nn.module import Module
from ..nn.utils import clip_grad_norm_
from .._kernels import step as _ks
from .callbacks import Callback, runs_per_batch
from .compiled import CompiledStep, check_model_loss, model_features
from ..optim import Optimizer
from .._typing import Array, ArrayLike, PathLike

__all__ = ["Trainer", "History"]


# ------------------------------------------------------------------------------ History
class History:
    """What ``Trainer.fit`` recorded, one entry per epoch: ``history["loss"]``,
    ``["accuracy"]`` (classification losses), ``["val_loss"]`` / ``["val_accuracy"]`` (with
    validation data), ``["time"]`` (seconds), ``["samples_per_s"]`` and ``["lr"]``;
    ``epochs`` lists the epoch numbers (1-based, continuing across ``fit`` calls).  "lr" is the
    optimizer's lr at the start of the epoch (the lr of its first step; with a per-epoch
    schedule, the epoch's lr)."""

    def __init__(self) -> None:
        self.history = {}
        self.epochs = []

    def _append(self, epoch, logs):
        self.epochs.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __getitem__(self, key: str) -> list[float]:
        try:
            return self.history[key]
        except KeyError:
            raise KeyError(f"History: no metric {key!r}; recorded: "
                           f"{sorted(self.history)}") from None

    def __contains__(self, key: object) -> bool:
        return key in self.history

    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epochs)}, metrics={sorted(self.history)})"

    def plot(self, path: PathLike, metrics: Sequence[str] | None = None) -> None:
        """Save a PNG of the loss (and accuracy) curves, training and validation, to
        ``path``.  Needs matplotlib (``pip install "fastnn[plot]"``)."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError('History.plot needs matplotlib: pip install "fastnn[plot]"') \
                from None
        if not self.epochs:
            raise ValueError("History.plot: nothing recorded yet (call Trainer.fit first)")
        groups = [g for g in (metrics or ("loss", "accuracy")) if g in self.history]
        if not groups:
            raise ValueError(f"History.plot: none of {metrics} was recorded; recorded: "
                             f"{sorted(self.history)}")
        # a Figure of its own with the Agg canvas: no pyplot, so the caller's backend and
        # figures are left alone
        fig = Figure(figsize=(5 * len(groups), 3.6))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(groups), squeeze=False)
        for ax, g in zip(axes[0], groups):
            ax.plot(self.epochs, self.history[g], marker=".", label=f"train {g}")
            if "val_" + g in self.history:
                ax.plot(self.epochs, self.history["val_" + g], marker=".",
                        label=f"validation {g}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(g)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path


# ------------------------------------------------------------------------------ Trainer
def _progress_bar(enabled, total, desc):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    import shutil
    cols = shutil.get_terminal_size((80, 24)).columns
    return tqdm(total=total, desc=desc, unit="sample", unit_scale=True, leave=True,
                file=sys.stderr, ncols=cols if cols > 20 else 80)


class Trainer:
    """Minibatch training of ``model`` with ``loss_fn`` and ``optimizer``.

    ``fit`` shuffles the data each epoch (a permutation drawn from ``seed`` and the epoch
    number, so runs are reproducible), and runs the epoch through :func:`compile_step`:
    gathering the batches and every step happen in compiled code, with no Python work per
    step (unless a callback overrides ``on_batch_end``: then each step is one kernel call,
    followed by the hooks, so e.g. a per-step lr schedule is seen by the next step).  Models that do not compile run the module path, batch by batch, with the same
    results.  The last batch of an epoch may be smaller.

    A non-finite training loss stops ``fit`` with a FloatingPointError naming the epoch and
    step; the parameters keep their values from before that step.  The progress bar (tqdm)
    shows the loss and samples/s; it is off when ``progress=False`` or stderr is not a
    terminal.

    ``clip_grad_norm=max_norm`` clips the gradients to a total 2-norm of at most max_norm
    before each update (``fastnn.clip_grad_norm_`` over the optimizer's parameters; inside
    the compiled step, see :func:`compile_step`).

    Parameters
    ----------
    model : Module
        The network.
    loss_fn : Loss
        The loss.
    optimizer : Optimizer
        The optimizer over (some of) the model's parameters.
    batch_size : int, optional
        Rows per step (>= 1).
    epochs : int, optional
        Epochs per ``fit`` call (>= 0).
    shuffle : bool, optional
        Shuffle the rows each epoch.
    seed : int, optional
        Seed of the epoch permutations, in [0, 2**64).
    progress : bool, optional
        Show a tqdm progress bar (only when stderr is a terminal).
    compiled : bool, optional
        Run epochs through ``compile_step`` when the model compiles.
    clip_grad_norm : float, optional
        Clip the total gradient 2-norm to this value before each update.
    """

    def __init__(self, model: Module, loss_fn: Loss, optimizer: Optimizer, *,
                 batch_size: int = 64, epochs: int = 10, shuffle: bool = True, seed: int = 0,
                 progress: bool = True, compiled: bool = True,
                 clip_grad_norm: float | None = None) -> None:
        check_model_loss("Trainer", model, loss_fn)
        self.clip_grad_norm = _checks.clip_option("Trainer", clip_grad_norm)
        for name, v, lo in (("batch_size", batch_size, 1), ("epochs", epochs, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"Trainer: {name} must be an int >= {lo}, got {v!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or \
                not 0 <= seed < 2**64:
            raise ValueError(f"Trainer: seed must be an int in [0, 2**64), got {seed!r}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.batch_size, self.epochs = int(batch_size), int(epochs)
        self.shuffle, self.seed, self.progress = bool(shuffle), int(seed), progress
        self.compiled = compiled
        self.epoch = 0                 # epochs completed, across fit calls
        self.stop_training = False
        self.history = History()
        self._step = None

    # -- data
    def _classification(self):
        return isinstance(self.loss_fn, (CrossEntropyLoss, NLLLoss, SVMLoss))

    def _dtype(self):
        try:
            return self.model.dtype
        except Exception:
            return np.dtype(np.float32)

    def _data(self, X, y, what):
        who = f"Trainer.{what}"
        if not isinstance(X, np.ndarray) or X.ndim != 2:
            raise TypeError(f"{who}: X must be a 2-D numpy.ndarray (samples, features), got "
                            f"{type(X).__name__ if not isinstance(X, np.ndarray) else f'{X.ndim}-D'}")
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{who}: X must be numeric, got dtype {X.dtype}")
        n = X.shape[0]
        if n == 0:
            raise ValueError(f"{who}: X has no samples")
        nin = self._n_in()
        if nin is not None and X.shape[1] != nin:
            raise ValueError(f"{who}: X has {X.shape[1]} features but the model's first "
                             f"Linear expects {nin} (X shape {X.shape})")
        X = np.ascontiguousarray(X, dtype=self._dtype())
        if y is None:
            return X, None
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{who}: y must be a numpy.ndarray, got {type(y).__name__}")
        if y.ndim == 0:
            raise ValueError(f"{who}: y must have one entry per sample ({n}), got a 0-d array")
        if y.shape[0] != n:
            raise ValueError(f"{who}: X has {n} samples but y has {y.shape[0]}")
        if self._classification():
            if y.ndim != 1 or y.dtype.kind not in "iu":
                raise TypeError(f"{who}: {type(self.loss_fn).__name__} needs integer class "
                                f"labels of shape ({n},), got dtype {y.dtype}, shape {y.shape}")
            nc = self._n_out()
            if nc is not None and (y.min() < 0 or y.max() >= nc):
                bad = int(np.flatnonzero((y < 0) | (y >= nc))[0])
                raise ValueError(f"{who}: labels must be in [0, {nc}) for the model's {nc} "
                                 f"outputs; y[{bad}] = {int(y[bad])}")
            y = np.ascontiguousarray(y, dtype=np.int64)
        else:
            if y.dtype.kind not in "fiub":
                raise TypeError(f"{who}: targets must be numeric, got dtype {y.dtype}")
            nout = self._n_out()
            if y.ndim == 1 and nout == 1:
                y = y.reshape(n, 1)
            if nout is not None and y.shape != (n, nout):
                raise ValueError(f"{who}: targets must have shape ({n}, {nout}) (the model's "
                                 f"output), got {y.shape}")
            y = np.ascontiguousarray(y, dtype=self._dtype())
        return X, y

    def _n_out(self):
        return model_features(self.model)[1]

    def _n_in(self):
        return model_features(self.model)[0]

    def _get_step(self):
        st = self._step
        if st is None or st.model is not self.model or st.optimizer is not self.optimizer \
                or st.loss_fn is not self.loss_fn:
            if self.compiled:
                st = CompiledStep(self.model, self.loss_fn, self.optimizer,
                                  batch_size=self.batch_size, warn=True,
                                  clip_grad_norm=self.clip_grad_norm)
            else:
                st = None
            self._step = st
        if st is not None and st.clip_grad_norm != self.clip_grad_norm:
            st.clip_grad_norm = self.clip_grad_norm
        return st

    # -- training
    def fit(self, X: ArrayLike, y: ArrayLike,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None,
            callbacks: Sequence[Callback] | None = None,
            sample_weight: ArrayLike | None = None) -> History:
        """Train for ``epochs`` epochs; returns the History (also ``trainer.history``),
        which continues across fit calls.  ``validation_data=(X_val, y_val)`` adds val_loss
        (and val_accuracy) after each epoch; ``callbacks`` is a list of Callback.

        ``sample_weight`` (n,): per-sample weights, finite and >= 0, passed batch by batch
        to the loss (``loss_fn(out, y_b, sample_weight=w_b)``: with reduction="mean" each
        batch's loss is divided by its sum of weights, as scikit-learn).  A batch whose
        weights are all 0 makes no update.  The epoch's "loss" is then the weighted mean
        over the samples.  Weighted fitting runs the module path (the compiled step does
        not take weights yet).

        Parameters
        ----------
        X : array_like
            The inputs, (n, in_features), in the model's dtype.
        y : array_like
            Integer labels (n,) or targets of the output's shape.
        validation_data : (X_val, y_val), optional
            Evaluated after each epoch ("val_loss", "val_accuracy").
        callbacks : list of Callback, optional
            Hooks run during training.
        sample_weight : array_like, optional
            Per-row weights (n,); the loss is normalized by their sum per batch.

        Returns
        -------
        History
            The per-epoch logs of every fit call so far.
        """
        X, y = self._data(X, y, "fit")
        if y is None:
            raise TypeError("Trainer.fit: y is required")
        sw = None if sample_weight is None else \
            _checks.sample_weight("Trainer.fit", sample_weight, X.shape[0])
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("Trainer.fit: validation_data must be a tuple (X_val, y_val)")
            val = self._data(*validation_data, "fit(validation_data)")
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"Trainer.fit: callbacks must be fastnn Callback instances, "
                                f"got {type(cb).__name__}")
        batch_cbs = [cb for cb in callbacks if runs_per_batch(cb)]
        n, bs = X.shape[0], self.batch_size
        steps = -(-n // bs)
        step = self._get_step() if sw is None else None
        if step is not None:
            step.reserve(bs)
        was_training = self.model.training
        self.model.train()
        show = bool(self.progress) and sys.stderr.isatty()
        self.stop_training = False
        perm = np.empty(n, np.int64)
        losses = np.empty(steps, np.float64)
        correct = np.zeros(steps, np.int64)
        sizes = np.full(steps, bs, np.float64)
        sizes[-1] = n - bs * (steps - 1)
        clf = self._classification()
        for cb in callbacks:
            cb.on_train_begin(self)
        try:
            for _ in range(self.epochs):
                e = self.epoch
                if self.shuffle:
                    _ks.shuffle(perm, self.seed, e)
                else:
                    perm[:] = np.arange(n)
                bar = _progress_bar(show, n, f"epoch {e + 1}")
                lr = getattr(self.optimizer, "lr", None)      # the epoch's first step's
                t0 = time.perf_counter()
                try:
                    self._epoch(step, X, y, perm, steps, losses, correct, bar, e, batch_cbs,
                                sw, sizes)
                finally:
                    if bar is not None:
                        bar.close()
                dt = time.perf_counter() - t0
                total = n if sw is None else float(sw.sum())   # weighted: sizes = sums
                if self.loss_fn.reduction == "mean":
                    loss = float(np.dot(losses, sizes) / total) if total > 0 else 0.0
                else:
                    loss = float(losses.sum() / total) if total > 0 else 0.0
                logs = {"loss": loss}
                if clf:
                    logs["accuracy"] = float(correct.sum() / n)
                if val is not None:
                    for k, v in self._evaluate(*val).items():
                        logs["val_" + k] = v
                logs["time"] = dt
                logs["samples_per_s"] = n / dt if dt > 0 else float("inf")
                if lr is not None:
                    logs["lr"] = float(lr)
                self.epoch = e + 1
                self.history._append(e + 1, logs)
                for cb in callbacks:
                    cb.on_epoch_end(self, e + 1, logs)
                if self.stop_training:
                    break
        finally:
            for cb in callbacks:
                cb.on_train_end(self)
            self.model.train(was_training)
        return self.history

    def _epoch(self, step, X, y, perm, steps, losses, correct, bar, e, batch_cbs, sw=None,
               sizes=None):
        n, bs = X.shape[0], self.batch_size
        s = 0
        if step is not None and step.compiled:
            # the whole epoch in compiled chunks; with a progress bar, chunks of ~0.1 s; with
            # a callback's on_batch_end, one step per call (the next step reads what the hook
            # set: the compiled step reads the optimizer's hyperparameters on every call)
            chunk = steps if bar is None and not batch_cbs else 1
            while s < steps:
                k = min(chunk, steps - s)
                t = time.perf_counter()
                done = step.run_batches(X, y, perm, s, k, bs, losses, correct)
                if done is None:          # the model changed and no longer compiles
                    break
                if done < k:
                    self._nonfinite(losses[s + done], e, s + done, steps)
                if bar is not None:
                    bar.update(min(n, (s + k) * bs) - min(n, s * bs))
                    bar.set_postfix(loss=f"{losses[s + k - 1]:.4g}", refresh=False)
                    el = time.perf_counter() - t
                    if not batch_cbs:
                        chunk = max(1, int(k * 0.1 / el)) if el > 0 else chunk * 2
                s += k
                for cb in batch_cbs:
                    cb.on_batch_end(self, s)
            if s >= steps:
                return
        # the module path, batch by batch (same arithmetic as the compiled step)
        model, lf, opt = self.model, self.loss_fn, self.optimizer
        clf = self._classification()
        while s < steps:
            idx = perm[s * bs:(s + 1) * bs]
            xb, yb = X[idx], y[idx]
            model.zero_grad()
            opt.zero_grad()
            out = model(xb)
            if sw is None:
                loss = lf(out, yb)
            else:
                wb = sw[idx]
                sizes[s] = wb.sum()     # the batch's weight in the epoch's mean
                loss = lf(out, yb, sample_weight=wb) if sizes[s] > 0 else None
            if loss is not None and not math.isfinite(loss):
                self._nonfinite(loss, e, s, steps)
            if clf:
                correct[s] = int(np.count_nonzero(out.argmax(axis=1) == yb))
            if loss is not None:
                model.backward(lf.backward(), input_grad=False)
                if self.clip_grad_norm is not None:
                    clip_grad_norm_(opt.params, self.clip_grad_norm)
                opt.step()
            else:
                loss = 0.0               # all weights 0: no update
            losses[s] = loss
            if bar is not None:
                bar.update(len(idx))
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            s += 1
            for cb in batch_cbs:
                cb.on_batch_end(self, s)

    def _nonfinite(self, loss, e, s, steps):
        raise FloatingPointError(
            f"Trainer: the training loss became {loss} at epoch {e + 1}, step {s + 1} of "
            f"{steps}; training stopped before that step's update, so the parameters hold "
            "their values from the step before (try a smaller learning rate)")

    # -- inference
    def _batches(self, n):
        b = max(self.batch_size, 1024)
        return range(0, n, b), b

    def predict(self, X: ArrayLike) -> Array:
        """The model's outputs for X (eval mode, in batches); the mode is restored.

        Parameters
        ----------
        X : array_like
            The inputs.

        Returns
        -------
        numpy.ndarray
            The outputs, one row per input row.
        """
        X, _ = self._data(X, None, "predict")
        was = self.model.training
        self.model.eval()
        try:
            starts, b = self._batches(X.shape[0])
            return np.concatenate([self.model(X[i:i + b]) for i in starts])
        finally:
            self.model.train(was)

    def evaluate(self, X: ArrayLike, y: ArrayLike) -> dict[str, float]:
        """{"loss": ..., "accuracy": ... (classification losses)} over X, y in eval mode.
        The loss is averaged as in fit's logs.

        Parameters
        ----------
        X : array_like
            The inputs.
        y : array_like
            The labels or targets.

        Returns
        -------
        dict
            "loss", and "accuracy" for classification losses.
        """
        return self._evaluate(*self._data(X, y, "evaluate"))

    def _evaluate(self, X, y):
        was = self.model.training
        self.model.eval()
        lf = self.loss_fn
        n = X.shape[0]
        total, hits = 0.0, 0
        try:
            starts, b = self._batches(n)
            for i in starts:
                out = self.model(X[i:i + b])
                yb = y[i:i + b]
                v = lf(out, yb)
                total += v * len(yb) if lf.reduction == "mean" else v
                if self._classification():
                    hits += int(np.count_nonzero(out.argmax(axis=1) == yb))
        finally:
            self.model.train(was)
        res = {"loss": total / n}
        if self._classification():
            res["accuracy"] = hits / n
        return res
