"""Training: the one-call compiled step, the Trainer, History and callbacks.

``step = compile_step(model, loss_fn, optimizer)`` turns a Sequential of Linear and activation
layers, an MSELoss / CrossEntropyLoss / SVMLoss and an SGD into one nogil kernel call per
step (forward, loss, backward, update).  ``Trainer`` runs whole epochs through it, with
shuffling and minibatch gathering in compiled code.
"""
import math
import os
import sys
import time
import warnings

import numpy as np

from .losses import CrossEntropyLoss, Loss, MSELoss, SVMLoss
from .modules import (Identity, Linear, Module, Sequential, _Activation, _float_dtype,
                      _structure_version)
from .optim import SGD
from ._kernels import step as _ks

__all__ = ["compile_step", "CompiledStep", "Trainer", "History", "Callback",
           "EarlyStopping"]

_LOSS_KINDS = {MSELoss: 0, CrossEntropyLoss: 1, SVMLoss: 2}


class _CannotCompile(Exception):
    pass


# the package's own directory, with a trailing separator ("fastnn_extra/" is not ours)
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _check_model_loss(who, model, loss_fn):
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be a fastnn Module, got {type(model).__name__}")
    if not isinstance(loss_fn, Loss):
        raise TypeError(f"{who}: loss_fn must be a fastnn Loss, got {type(loss_fn).__name__}")


def _user_stacklevel():
    """The stacklevel of the first caller outside the fastnn package (for warnings)."""
    f, level = sys._getframe(1), 1
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIR):
        f = f.f_back
        level += 1
    return level


def _flatten(model, out):
    if type(model) is Sequential:
        for m in model:
            _flatten(m, out)
    else:
        out.append(model)
    return out


def _plan(model, loss_fn, optimizer):
    """[(Linear, act code, slope)] for the compiled step, or _CannotCompile(reason)."""
    if type(optimizer) is not SGD:
        raise _CannotCompile(f"the optimizer is a {type(optimizer).__name__}, not fastnn.SGD")
    if type(loss_fn) not in _LOSS_KINDS:
        raise _CannotCompile(f"the loss is a {type(loss_fn).__name__}; MSELoss, "
                             "CrossEntropyLoss and SVMLoss compile")
    if type(model) not in (Sequential, Linear):
        raise _CannotCompile(f"the model is a {type(model).__name__}; a Sequential of Linear "
                             "and activation layers compiles")
    mods = [m for m in _flatten(model, []) if type(m) is not Identity]
    layers, i = [], 0
    while i < len(mods):
        m = mods[i]
        if type(m) is not Linear:
            what = ("an activation that does not follow a Linear"
                    if isinstance(m, _Activation) else f"a {type(m).__name__}")
            raise _CannotCompile(f"the model has {what} ({m!r})")
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(nxt, _Activation):
            if not nxt._fusable() or type(nxt)._fwd is not _Activation._fwd:
                raise _CannotCompile(f"{nxt!r} does not fuse into the Linear before it")
            layers.append((m, nxt._code, float(nxt._slope())))
            i += 2
        else:
            layers.append((m, 0, 0.0))
            i += 1
    if not layers:
        raise _CannotCompile("the model has no Linear layer")
    dt = layers[0][0].weight.dtype
    for k, (lin, _, _) in enumerate(layers):
        if lin.weight.dtype != dt:
            raise _CannotCompile(f"its layers mix {dt} and {lin.weight.dtype}")
        if k and lin.in_features != layers[k - 1][0].out_features:
            raise _CannotCompile(f"{lin._who()} follows a layer with "
                                 f"{layers[k - 1][0].out_features} outputs")
    mparams = []
    seen = set()
    for lin, _, _ in layers:
        for p in (lin.weight, lin.bias):
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                mparams.append(p)
    for i, p in enumerate(optimizer.params):
        if id(p) not in seen:
            raise _CannotCompile(f"the optimizer's params[{i}] is not a parameter of the "
                                 "model")
        if p.dtype != dt:
            raise _CannotCompile(f"the optimizer's params[{i}] is {p.dtype}, the model {dt}")
    return layers, mparams, dt


class CompiledStep:
    """``loss = step(x, y)``: zero_grad, forward, loss, backward and ``optimizer.step()`` of
    ``model`` in one nogil kernel call (see :func:`compile_step`).

    Attributes: ``compiled`` (False when it runs the module path), ``reason`` (why not, or
    None), ``model``, ``loss_fn``, ``optimizer``.
    """

    def __init__(self, model, loss_fn, optimizer, batch_size=None, warn=True):
        _check_model_loss("compile_step", model, loss_fn)
        if not hasattr(optimizer, "step") or not hasattr(optimizer, "zero_grad"):
            raise TypeError(f"compile_step: optimizer must have step() and zero_grad(), got "
                            f"{type(optimizer).__name__}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self._warn = warn
        self._kernel = None
        self.reason = None
        self._cap = int(batch_size) if batch_size else 0
        self._setup()

    @property
    def compiled(self):
        """True when step(x, y) runs the compiled kernel (re-planned first if the model
        changed since the last call)."""
        if self._kernel is not None and not self._kernel.valid():
            self._setup()
        return self._kernel is not None

    def _setup(self, cap=None):
        try:
            layers, mparams, dt = _plan(self.model, self.loss_fn, self.optimizer)
        except _CannotCompile as e:
            self._kernel = None
            if self.reason is None and self._warn:
                warnings.warn(f"compile_step: {e}; running the module path instead",
                              RuntimeWarning, stacklevel=_user_stacklevel())
            self.reason = str(e)
            return
        self.reason = None
        if cap is not None:
            self._cap = max(self._cap, int(cap))
        cap = max(self._cap, 1)
        self._layers = layers
        self.in_features = layers[0][0].in_features
        self.out_features = layers[-1][0].out_features
        self.dtype = dt
        # each Parameter's gradient is overwritten by its last use in the network (the
        # first one backward reaches) and added to by any earlier use (a Linear used twice,
        # or two Linears sharing a weight), as in the module path
        seen, acc = set(), []
        for lin, _, _ in reversed(layers):
            flags = []
            for p in (lin.weight, lin.bias):
                flags.append(p is not None and id(p) in seen)
                if p is not None:
                    seen.add(id(p))
            acc.append(flags)
        acc.reverse()
        specs = []
        for k, (lin, code, slope) in enumerate(layers):
            N, K = lin.out_features, lin.in_features
            b = lin.bias
            specs.append({
                "K": K, "N": N, "act": code, "slope": slope,
                "accW": acc[k][0], "accb": acc[k][1],
                "W": lin.weight._data, "b": b._data if b is not None else None,
                "gW": lin.weight._grad, "gb": b._grad if b is not None else None,
                "out": np.empty((cap, N), dt), "work": np.empty((cap, N), dt) if code else None,
                "gx": np.empty((cap, K), dt) if k else None})
        nout = self.out_features
        scratch = [np.empty((cap, nout), dt), np.empty(cap, np.float64),
                   np.empty((cap, self.in_features), dt), np.empty((cap, nout), dt),
                   np.empty(cap, np.int64)]
        kernel = _ks._StepKernel()
        lf = self.loss_fn
        kernel.setup(self.model, specs, self.optimizer.params, mparams, self.optimizer, lf,
                     _LOSS_KINDS[type(lf)], cap, dt, scratch,
                     _structure_version, _structure_version[0])
        # the optimizer's parameter list is checked by identity on each call
        self._kernel = kernel

    def _module_step(self, x, y):
        model, lf, opt = self.model, self.loss_fn, self.optimizer
        model.zero_grad()
        opt.zero_grad()
        loss = lf(model(x), y)
        model.backward(lf.backward(), input_grad=False)
        opt.step()
        return loss

    def __call__(self, x, y):
        k = self._kernel
        if k is not None:
            loss = k.step(x, y)
            if loss is not None:
                return loss
        return self._replan_and_call(x, y)

    def _replan_and_call(self, x, y):
        """The slow path: re-plan when the model, optimizer or batch size changed (falling
        back to the module path when it no longer compiles), then take the step."""
        if not self.model.training:
            raise RuntimeError("compiled step: the model is in eval mode; a training step "
                               "needs model.train() (as the module path's backward does)")
        k = self._kernel
        if k is None or not k.valid():
            if k is not None or self.reason is not None:
                self._setup()
        elif isinstance(x, np.ndarray) and x.ndim == 2:
            self._setup(cap=len(x))           # a larger batch: grow the workspaces
        k = self._kernel
        if k is None:
            return self._module_step(x, y)
        loss = k.step(x, y)
        if loss is None:
            self._setup(cap=len(x))
            loss = self._kernel.step(x, y)
        return loss

    def __repr__(self):
        state = "compiled" if self.compiled else f"module path: {self.reason}"
        return f"CompiledStep({state})"


def compile_step(model, loss_fn, optimizer, *, batch_size=None, warn=True):
    """One training step as one compiled call: ``loss = step(x, y)``.

    For a ``Sequential`` (nested ones are flattened) of ``Linear`` layers, each optionally
    followed by a Sigmoid, ReLU, Tanh or LeakyReLU (negative_slope >= 0), with an
    ``MSELoss``, ``CrossEntropyLoss`` or ``SVMLoss`` and an ``SGD`` over (some of) the
    model's parameters, ``step(x, y)`` runs forward, the loss, backward and the SGD update in
    one nogil kernel call on workspaces allocated once (grown when a larger batch comes).
    It equals::

        model.zero_grad(); optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()

    with bitwise identical parameters after any number of steps, for either dtype and any
    thread count.  After a step each parameter's ``.grad`` holds that step's gradient and the
    optimizer's momentum buffers and ``steps`` are updated, so compiled and module steps can
    be mixed.  Optimizer hyperparameters are read on every call (schedules work); replacing
    the model's layers or converting its dtype re-plans the step on the next call.

    x must have the model's dtype; y is an integer label array (classification losses,
    checked against the number of classes) or a target array of the output's shape (MSE).
    Anything else (another optimizer, loss or module type) falls back to exactly the module
    code above behind the same API, with one RuntimeWarning saying why (``warn=False``
    silences it); ``step.compiled`` and ``step.reason`` tell which path runs.
    """
    return CompiledStep(model, loss_fn, optimizer, batch_size=batch_size, warn=warn)


# ------------------------------------------------------------------------------ History
class History:
    """What ``Trainer.fit`` recorded, one entry per epoch: ``history["loss"]``,
    ``["accuracy"]`` (classification losses), ``["val_loss"]`` / ``["val_accuracy"]`` (with
    validation data), ``["time"]`` (seconds), ``["samples_per_s"]`` and ``["lr"]``;
    ``epochs`` lists the epoch numbers (1-based, continuing across ``fit`` calls)."""

    def __init__(self):
        self.history = {}
        self.epochs = []

    def _append(self, epoch, logs):
        self.epochs.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __getitem__(self, key):
        try:
            return self.history[key]
        except KeyError:
            raise KeyError(f"History: no metric {key!r}; recorded: "
                           f"{sorted(self.history)}") from None

    def __contains__(self, key):
        return key in self.history

    def __len__(self):
        return len(self.epochs)

    def __repr__(self):
        return f"History(epochs={len(self.epochs)}, metrics={sorted(self.history)})"

    def plot(self, path, metrics=None):
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


# ---------------------------------------------------------------------------- callbacks
class Callback:
    """Base class of Trainer callbacks; override any of the hooks.  Setting
    ``trainer.stop_training = True`` ends ``fit`` after the current epoch."""

    def on_train_begin(self, trainer):
        pass

    def on_epoch_end(self, trainer, epoch, logs):
        pass

    def on_train_end(self, trainer):
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a key of the epoch logs, e.g. "val_loss", "val_accuracy",
    "loss") has not improved by more than ``min_delta`` for ``patience`` epochs.  ``mode``
    "min", "max" or "auto" (max for accuracies, min otherwise).  With
    ``restore_best_weights`` the model gets the parameters of its best epoch back when
    training ends.  After fit: ``best``, ``best_epoch``, ``stopped_epoch`` (None if it ran
    to the end)."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got "
                             f"{mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        min_delta = float(min_delta)
        if not min_delta >= 0:
            raise ValueError(f"EarlyStopping: min_delta must be >= 0, got {min_delta}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        self.best = self.best_epoch = self.stopped_epoch = None

    def on_train_begin(self, trainer):
        self.best = self.best_epoch = self.stopped_epoch = None
        self._wait = 0
        self._state = None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitored metric {self.monitor!r} is not in the "
                           f"epoch logs {sorted(logs)} (val_* metrics need validation_data)")
        v = float(logs[self.monitor])
        if self.best is None or (v < self.best - self.min_delta if self.mode == "min"
                                 else v > self.best + self.min_delta):
            self.best, self.best_epoch, self._wait = v, epoch, 0
            if self.restore_best_weights:
                self._state = trainer.model.state_dict()
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.stop_training = True

    def on_train_end(self, trainer):
        if self.restore_best_weights and self._state is not None:
            trainer.model.load_state_dict(self._state)
        self._state = None


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
    step.  Models that do not compile run the module path, batch by batch, with the same
    results.  The last batch of an epoch may be smaller.

    A non-finite training loss stops ``fit`` with a FloatingPointError naming the epoch and
    step; the parameters keep their values from before that step.  The progress bar (tqdm)
    shows the loss and samples/s; it is off when ``progress=False`` or stderr is not a
    terminal.
    """

    def __init__(self, model, loss_fn, optimizer, *, batch_size=64, epochs=10, shuffle=True,
                 seed=0, progress=True, compiled=True):
        _check_model_loss("Trainer", model, loss_fn)
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
        return isinstance(self.loss_fn, (CrossEntropyLoss, SVMLoss))

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

    def _chain(self):
        """The model's layers when it is a Sequential/Linear chain (Identity skipped), else
        an empty list: where the input and output widths can be read off."""
        if type(self.model) not in (Sequential, Linear):
            return []
        return [m for m in _flatten(self.model, []) if type(m) is not Identity]

    def _n_out(self):
        lins = [m for m in self._chain() if type(m) is Linear]
        return lins[-1].out_features if lins else None

    def _n_in(self):
        mods = self._chain()
        return mods[0].in_features if mods and type(mods[0]) is Linear else None

    def _get_step(self):
        st = self._step
        if st is None or st.model is not self.model or st.optimizer is not self.optimizer \
                or st.loss_fn is not self.loss_fn:
            if self.compiled:
                st = CompiledStep(self.model, self.loss_fn, self.optimizer,
                                  batch_size=self.batch_size, warn=True)
            else:
                st = None
            self._step = st
        return st

    # -- training
    def fit(self, X, y, validation_data=None, callbacks=None):
        """Train for ``epochs`` epochs; returns the History (also ``trainer.history``),
        which continues across fit calls.  ``validation_data=(X_val, y_val)`` adds val_loss
        (and val_accuracy) after each epoch; ``callbacks`` is a list of Callback."""
        X, y = self._data(X, y, "fit")
        if y is None:
            raise TypeError("Trainer.fit: y is required")
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
        n, bs = X.shape[0], self.batch_size
        steps = -(-n // bs)
        step = self._get_step()
        if step is not None and step.compiled and step._cap < bs:
            step._setup(cap=bs)
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
                t0 = time.perf_counter()
                try:
                    self._epoch(step, X, y, perm, steps, losses, correct, bar, e)
                finally:
                    if bar is not None:
                        bar.close()
                dt = time.perf_counter() - t0
                if self.loss_fn.reduction == "mean":
                    loss = float(np.dot(losses, sizes) / n)
                else:
                    loss = float(losses.sum() / n)
                logs = {"loss": loss}
                if clf:
                    logs["accuracy"] = float(correct.sum() / n)
                if val is not None:
                    for k, v in self._evaluate(*val).items():
                        logs["val_" + k] = v
                logs["time"] = dt
                logs["samples_per_s"] = n / dt if dt > 0 else float("inf")
                lr = getattr(self.optimizer, "lr", None)
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

    def _epoch(self, step, X, y, perm, steps, losses, correct, bar, e):
        n, bs = X.shape[0], self.batch_size
        s = 0
        if step is not None and step.compiled:
            # the whole epoch in compiled chunks; with a progress bar, chunks of ~0.1 s
            chunk = steps if bar is None else 1
            while s < steps:
                if not step._kernel.valid():
                    step._setup(cap=bs)
                    if not step.compiled:
                        break
                k = min(chunk, steps - s)
                t = time.perf_counter()
                done = step._kernel.run_batches(X, y, perm, s, k, bs, losses, correct)
                if done < k:
                    self._nonfinite(losses[s + done], e, s + done, steps)
                if bar is not None:
                    bar.update(min(n, (s + k) * bs) - min(n, s * bs))
                    bar.set_postfix(loss=f"{losses[s + k - 1]:.4g}", refresh=False)
                    el = time.perf_counter() - t
                    chunk = max(1, int(k * 0.1 / el)) if el > 0 else chunk * 2
                s += k
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
            loss = lf(out, yb)
            if not math.isfinite(loss):
                self._nonfinite(loss, e, s, steps)
            if clf:
                correct[s] = int(np.count_nonzero(out.argmax(axis=1) == yb))
            model.backward(lf.backward(), input_grad=False)
            opt.step()
            losses[s] = loss
            if bar is not None:
                bar.update(len(idx))
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            s += 1

    def _nonfinite(self, loss, e, s, steps):
        raise FloatingPointError(
            f"Trainer: the training loss became {loss} at epoch {e + 1}, step {s + 1} of "
            f"{steps}; training stopped before that step's update, so the parameters hold "
            "their values from the step before (try a smaller learning rate)")

    # -- inference
    def _batches(self, n):
        b = max(self.batch_size, 1024)
        return range(0, n, b), b

    def predict(self, X):
        """The model's outputs for X (eval mode, in batches); the mode is restored."""
        X, _ = self._data(X, None, "predict")
        was = self.model.training
        self.model.eval()
        try:
            starts, b = self._batches(X.shape[0])
            return np.concatenate([self.model(X[i:i + b]) for i in starts])
        finally:
            self.model.train(was)

    def evaluate(self, X, y):
        """{"loss": ..., "accuracy": ... (classification losses)} over X, y in eval mode.
        The loss is averaged as in fit's logs."""
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
