"""Training: the one-call compiled step, the Trainer, History and callbacks.

``step = compile_step(model, loss_fn, optimizer)`` turns a Sequential of Linear and activation
layers, an MSELoss / CrossEntropyLoss / SVMLoss and an SGD into one nogil kernel call per
step (forward, loss, backward, update).  ``Trainer`` runs whole epochs through it, with
shuffling and minibatch gathering in compiled code.
"""
import math
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
        if not isinstance(model, Module):
            raise TypeError(f"compile_step: model must be a fastnn Module, got "
                            f"{type(model).__name__}")
        if not isinstance(loss_fn, Loss):
            raise TypeError(f"compile_step: loss_fn must be a fastnn Loss, got "
                            f"{type(loss_fn).__name__}")
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
        return self._kernel is not None

    def _setup(self, cap=None):
        try:
            layers, mparams, dt = _plan(self.model, self.loss_fn, self.optimizer)
        except _CannotCompile as e:
            self._kernel = None
            if self.reason is None and self._warn:
                warnings.warn(f"compile_step: {e}; running the module path instead",
                              RuntimeWarning, stacklevel=4)
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
        # each Linear's gradient is overwritten by its last use in the network (the first
        # one backward reaches) and added to by any earlier use, as in the module path
        seen, acc = set(), []
        for lin, _, _ in reversed(layers):
            acc.append(id(lin) in seen)
            seen.add(id(lin))
        acc.reverse()
        specs = []
        for k, (lin, code, slope) in enumerate(layers):
            N, K = lin.out_features, lin.in_features
            b = lin.bias
            specs.append({
                "K": K, "N": N, "act": code, "slope": slope, "acc": acc[k],
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
        kernel.setup(specs, self.optimizer.params, mparams, self.optimizer,
                     _LOSS_KINDS[type(lf)], lf.reduction == "mean",
                     float(getattr(lf, "margin", 1.0)), cap, dt, scratch,
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
        if k is None or not k.valid():
            if k is not None or self.reason is not None:
                self._setup()
            k = self._kernel
            if k is None:
                return self._module_step(x, y)
        loss = k.step(x, y)
        if loss is None:                  # a larger batch than planned: grow the workspaces
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
