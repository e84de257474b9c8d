"""compile_step: a whole training step (forward, loss, backward, the optimizer's update) as
one nogil kernel call.

The steps come from the one planner (fastnn.nn.plan): a chain's ``plan_chain`` or a Graph's
own plan.  This file turns a plan into a *program* -- value slots with their widths and
buffers, and one op per step (Linear+activation, activation, gate) with the buffers its
backward writes -- checks that the program does what the module path would do, and hands
it to ``fastnn._kernels.step.StepKernel``, which points into the arrays allocated here and
runs the program in C.  The kernel talks to the optimizer and the parameters only through
their contracts (``fastnn.optim.Optimizer``: ``_kind``, ``_hyper``, ``_prepare_state``, ...;
``Parameter._set_written``), so any optimizer built on that contract compiles.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from .. import _checks
from ..losses import (BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, Loss, MSELoss,
                      SmoothL1Loss, SVMLoss)
from ..nn import Add, Concat, Graph, Identity, Linear, LogSoftmax, Maximum, Module, \
    Multiply, Sequential, Softmax, Split
from ..nn.layers import _Activation
from ..nn.module import _structure_version
from ..nn.layers import Dropout
from ..nn.norm import BatchNorm1d, LayerNorm
from ..nn.plan import ActStep, DropoutStep, GateStep, LinearStep, NormStep, fusable, \
    norm_features, plan_chain
from ..nn.utils import clip_grad_norm_
from ..optim import Optimizer
from .._kernels import step as _ks
from .._kernels._core import GateOp, LossKind, OpKind
from .._typing import Array, ArrayLike
from ..ops import SAVES_INPUT_CODES

__all__ = ["compile_step", "CompiledStep"]

# codes of the step kernel's program (the table in fastnn/_kernels/fnn_types.h)
_LOSS_KINDS = {MSELoss: LossKind.MSE, CrossEntropyLoss: LossKind.XENT, SVMLoss: LossKind.SVM,
               L1Loss: LossKind.L1, HuberLoss: LossKind.HUBER, SmoothL1Loss: LossKind.SMOOTH_L1,
               BCEWithLogitsLoss: LossKind.BCE_LOGITS}
_GATE_OPS = {Add: GateOp.ADD, Multiply: GateOp.MUL, Maximum: GateOp.MAX,
             Concat: GateOp.CONCAT, Split: GateOp.SPLIT}
# the row-wise activations: their own ops, never fused
_ROW_OPS = {Softmax: OpKind.SOFTMAX, LogSoftmax: OpKind.LOGSOFTMAX}


class CannotCompile(Exception):
    pass


# the package's own directory, with a trailing separator ("fastnn_extra/" is not ours)
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def check_model_loss(who, model, loss_fn):
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be a fastnn Module, got {type(model).__name__}")
    if not isinstance(loss_fn, Loss):
        raise TypeError(f"{who}: loss_fn must be a fastnn Loss, got {type(loss_fn).__name__}")


def user_stacklevel():
    """The stacklevel of the first caller outside the fastnn package (for warnings)."""
    f, level = sys._getframe(1), 1
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIR):
        f = f.f_back
        level += 1
    return level


def flatten(model, out):
    """The modules of a chain, nested Sequentials flattened and Identity skipped."""
    if type(model) is Sequential:
        for m in model:
            flatten(m, out)
    elif type(model) is not Identity:
        out.append(model)
    return out


# --------------------------------------------------------------------------- planning
def _chain_plan(model):
    """The plan of a Sequential/Linear chain of Linear, LayerNorm, BatchNorm1d, Dropout
    and activation layers; an activation that does not follow a Linear runs as its own
    op."""
    mods = flatten(model, [])
    for i, m in enumerate(mods):
        if type(m) in (Linear, LayerNorm, BatchNorm1d, Dropout):
            continue
        if not isinstance(m, _Activation):
            raise CannotCompile(f"the model has a {type(m).__name__} ({m!r})")
        if type(m) in _ROW_OPS:
            continue
        if not fusable(m):
            raise CannotCompile(f"{m!r} does not fuse (it reads its input in backward); "
                                "Sigmoid, ReLU, Tanh, GELU, SiLU, Softplus, "
                                "LeakyReLU(negative_slope >= 0), ELU(alpha >= 0), Softmax "
                                "and LogSoftmax compile")
    k0 = None
    for m in mods:                      # the first layer with a known input width
        if isinstance(m, _Activation) or type(m) is Dropout:
            continue
        k0 = m.in_features if type(m) is Linear else norm_features(m)
        break
    return plan_chain(mods), k0


def _graph_plan(g):
    try:
        plan = g._plan or g._build_plan()
    except (RuntimeError, ValueError) as e:
        raise CannotCompile(str(e)) from None
    if len(plan.in_slots) != 1 or len(plan.out_slots) != 1:
        raise CannotCompile(f"the Graph has {len(plan.in_slots)} inputs and "
                            f"{len(plan.out_slots)} outputs; one of each compiles")
    for st in plan.steps:
        if type(st) is ActStep:
            if type(st.act) not in _ROW_OPS and not fusable(st.act):
                raise CannotCompile(f"{st.act!r} reads its input in backward outside the "
                                    "kernels; Sigmoid, ReLU, Tanh, GELU, SiLU, Softplus, "
                                    "LeakyReLU(negative_slope >= 0), ELU(alpha >= 0), "
                                    "Softmax and LogSoftmax compile")
        elif type(st) is GateStep:
            if type(st.gate) not in _GATE_OPS:
                raise CannotCompile(f"the graph has a {type(st.gate).__name__}")
        elif type(st) not in (LinearStep, NormStep, DropoutStep):
            raise CannotCompile(f"the graph has a {type(st.module).__name__} "
                                f"({st.module!r}) at node {st.index}")
    declared = g._recs[list(g._input_ids.values())[0]].feats[0]
    return plan, declared


def _widths(plan, k0):
    """The width (last-axis size) of every value, checking that each step fits its inputs;
    k0 is the input's width when known."""
    w = [None] * plan.nslots
    s0 = plan.in_slots[0]
    if k0 is None:        # read it off a Linear that takes the input
        for st, ins in zip(plan.steps, plan.ins):
            if type(st) is LinearStep and ins[0] == s0:
                k0 = st.lin.in_features
                break
            if type(st) is NormStep and ins[0] == s0:
                k0 = norm_features(st.norm)
                break
    if k0 is None:
        raise CannotCompile("the input's number of features is unknown; declare it with "
                            "g.input(name, features=n)")
    w[s0] = k0
    for st, ins, outs in zip(plan.steps, plan.ins, plan.outs):
        f = [w[s] for s in ins]
        if type(st) is LinearStep:
            if f[0] != st.lin.in_features:
                raise CannotCompile(f"{st.lin._who()} follows a layer with {f[0]} outputs")
            w[outs[0]] = st.lin.out_features
        elif type(st) in (ActStep, DropoutStep):
            w[outs[0]] = f[0]
        elif type(st) is NormStep:
            if f[0] != norm_features(st.norm):
                raise CannotCompile(f"{st.norm!r} follows a layer with {f[0]} outputs")
            w[outs[0]] = f[0]
        else:
            gate = st.gate
            if isinstance(gate, Concat):
                w[outs[0]] = sum(f)
            elif isinstance(gate, Split):
                if sum(gate.sizes) != f[0]:
                    raise CannotCompile(f"{gate!r} splits {sum(gate.sizes)} features but its "
                                        f"input has {f[0]}")
                for s, n in zip(outs, gate.sizes):
                    w[s] = n
            else:
                if f[0] != f[1]:
                    raise CannotCompile(f"{gate!r} adds inputs of {f[0]} and {f[1]} features")
                w[outs[0]] = f[0]
    return w


def _program(model, loss_fn, optimizer):
    """Everything StepKernel.setup needs, or CannotCompile(reason)."""
    if not isinstance(optimizer, Optimizer) or optimizer._kind is None:
        raise CannotCompile(f"the optimizer is a {type(optimizer).__name__}, not one of "
                            "fastnn's optimizers")
    if type(optimizer).step is not Optimizer.step:
        raise CannotCompile(f"{type(optimizer).__name__} overrides step(); the compiled step "
                            "would not run it")
    if type(loss_fn) not in _LOSS_KINDS:
        raise CannotCompile(f"the loss is a {type(loss_fn).__name__}; MSELoss, L1Loss, "
                            "HuberLoss, SmoothL1Loss, BCEWithLogitsLoss, CrossEntropyLoss and "
                            "SVMLoss compile")
    if type(loss_fn) is CrossEntropyLoss and (loss_fn.weight is not None
                                              or loss_fn.label_smoothing):
        raise CannotCompile("CrossEntropyLoss with class weights or label smoothing does "
                            "not compile yet")
    if type(model) in (Sequential, Linear):
        plan, k0 = _chain_plan(model)
    elif type(model) is Graph:
        plan, k0 = _graph_plan(model)
    else:
        raise CannotCompile(f"the model is a {type(model).__name__}; a Sequential of Linear "
                            "and activation layers, or a Graph of Linear, activation and gate "
                            "nodes, compiles")
    lins = [st.lin for st in plan.steps if type(st) is LinearStep]
    if not lins:
        raise CannotCompile("the model has no Linear layer")
    dt = lins[0].weight.dtype
    for lin in lins:
        if lin.weight.dtype != dt:
            raise CannotCompile(f"its layers mix {dt} and {lin.weight.dtype}")
    for st in plan.steps:
        if type(st) is NormStep and st.norm.dtype != dt:
            raise CannotCompile(f"its layers mix {dt} and {st.norm.dtype}")
    widths = _widths(plan, k0)
    needs, want, skip = plan.flow(False)
    # which steps backward runs (a gradient reaches one of their outputs) and how many
    # gradient contributions reach each value (more than one: summed in a buffer)
    out_slot = plan.out_slots[0]
    contribs = [0] * plan.nslots
    contribs[out_slot] = 1 if needs[out_slot] else 0
    runs = [False] * len(plan.steps)
    for k in range(len(plan.steps) - 1, -1, -1):
        if skip[k] or not any(contribs[s] for s in plan.outs[k]):
            continue
        runs[k] = True
        if want[k]:
            for s in plan.ins[k]:
                if needs[s]:
                    contribs[s] += 1
    # each Parameter's gradient is overwritten by its first use in backward order and added
    # to by the later ones (a Linear used twice, or two Linears sharing a weight), as in
    # the module path
    seen, mparams = set(), []
    acc = {}
    for k in range(len(plan.steps) - 1, -1, -1):
        st = plan.steps[k]
        if runs[k] and type(st) in (LinearStep, NormStep):
            flags = []
            for p in (st.module.weight, st.module.bias):
                flags.append(p is not None and id(p) in seen)
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    mparams.append(p)
            acc[k] = flags
    for i, p in enumerate(optimizer.params):
        if id(p) not in seen:
            raise CannotCompile(f"the optimizer's params[{i}] is not a parameter of the "
                                "model")
        if p.dtype != dt:
            raise CannotCompile(f"the optimizer's params[{i}] is {p.dtype}, the model {dt}")
    return plan, dt, widths, needs, want, runs, contribs, acc, mparams


def _arrays(plan, dt, widths, needs, want, runs, contribs, acc, cap):
    """The program's slots and ops with their buffers, for a batch capacity `cap`."""
    emp = lambda n: np.empty((cap, n), dt)      # noqa: E731
    s0 = plan.in_slots[0]
    # (a slot of no step's output -- a Linear's fused into its activation -- stays empty)
    slots = [{"n": widths[s] or 0,
              "val": None if s == s0 or widths[s] is None else emp(widths[s]),
              "gsum": emp(widths[s]) if contribs[s] > 1 else None}
             for s in range(plan.nslots)]
    ops = []
    for k, st in enumerate(plan.steps):
        ins, outs = plan.ins[k], plan.outs[k]
        wk = want[k] and runs[k]
        op = {"ins": ins, "outs": outs, "run": runs[k], "want": wk,
              "needs": [bool(needs[s]) for s in ins], "act": 0, "slope": 0.0, "gop": 0,
              "K": 0, "N": 0, "W": None, "b": None, "gW": None, "gb": None,
              "accW": False, "accb": False, "work": None,
              "gin": [None] * len(ins), "drop": None}
        if type(st) is LinearStep:
            lin = st.lin
            op.update(kind=OpKind.LINEAR, act=st.code, slope=float(st.slope),
                      K=lin.in_features, N=lin.out_features, W=lin.weight._data,
                      b=lin.bias._data if lin.bias is not None else None,
                      gW=lin.weight._grad,
                      gb=lin.bias._grad if lin.bias is not None else None,
                      work=emp(lin.out_features) if st.code and runs[k] else None,
                      # the pre-activation, kept for an activation whose backward reads it
                      z=emp(lin.out_features) if st.code in SAVES_INPUT_CODES else None)
            if runs[k]:
                op["accW"], op["accb"] = acc[k]
            if wk and needs[ins[0]]:
                op["gin"][0] = emp(lin.in_features)
        elif type(st) is ActStep:
            op.update(kind=_ROW_OPS.get(type(st.act), OpKind.ACT), act=st.act._code,
                      slope=float(st.act._slope()), saves_input=st.act._saves_input)
            if wk and needs[ins[0]]:
                op["gin"][0] = emp(widths[ins[0]])
        elif type(st) is NormStep:
            _norm_op(op, st.norm, runs[k], acc.get(k), emp)
            if wk and needs[ins[0]]:
                op["gin"][0] = emp(widths[ins[0]])
        elif type(st) is DropoutStep:
            # the mask from the module's seed and step counter, read and advanced by the
            # kernel on every step (StepKernel._sync / _finish)
            op.update(kind=OpKind.DROPOUT, drop=st.drop)
            if wk and needs[ins[0]]:
                op["gin"][0] = emp(widths[ins[0]])
        else:
            gop = _GATE_OPS[type(st.gate)]
            op.update(kind=OpKind.GATE, gop=gop)
            if wk and gop != GateOp.ADD:       # Add hands its gradient itself to both inputs
                # Multiply / Maximum compute both input gradients, as the module path does
                op["gin"] = [emp(widths[s]) if (needs[s] or gop in (GateOp.MUL, GateOp.MAX))
                             else None for s in ins]
        ops.append(op)
    return slots, ops


def _norm_op(op, m, run, acc, emp):
    """A LAYERNORM / BATCHNORM op's fields and buffers (the arrays fastnn.nn.norm's _fwd /
    _bwd use, the parameters and BatchNorm1d's running statistics themselves)."""
    n = norm_features(m)
    w, b = m.weight, m.bias
    dt = m.dtype
    op.update(norm=m, N=n, K=n, eps=m.eps,
              W=w._data if w is not None else None, b=b._data if b is not None else None,
              gW=w._grad if w is not None else None, gb=b._grad if b is not None else None,
              xhat=emp(n))
    if run:
        op["accW"], op["accb"] = acc
    if type(m) is LayerNorm:
        op.update(kind=OpKind.LAYERNORM, st1=emp(1).reshape(-1),
                  work=emp(n) if run and w is not None else None)
    else:
        op.update(kind=OpKind.BATCHNORM, st1=np.empty(n, dt), st2=np.empty(n, dt),
                  sums=np.empty(3 * n, dt), work=emp(n) if run else None,
                  rm=m.running_mean, rv=m.running_var, nbt=m.num_batches_tracked)


class CompiledStep:
    """``loss = step(x, y)``: zero_grad, forward, loss, backward and ``optimizer.step()`` of
    ``model`` in one nogil kernel call (see :func:`compile_step`).

    Attributes: ``compiled`` (False when it runs the module path), ``reason`` (why not, or
    None), ``model``, ``loss_fn``, ``optimizer``, ``clip_grad_norm`` (settable) and
    ``last_grad_norm``; with a compiled model also ``in_features``, ``out_features`` and
    ``dtype``.

    Parameters
    ----------
    model : Module
        The network (a Sequential/Linear chain or a one-input, one-output Graph compiles).
    loss_fn : Loss
        The loss.
    optimizer : Optimizer
        A fastnn optimizer over (some of) the model's parameters.
    batch_size : int, optional
        Allocate the workspaces for batches up to this size now (else on first use).
    warn : bool, optional
        Warn (RuntimeWarning) when the model does not compile and the module path runs.
    clip_grad_norm : float, optional
        Clip the total gradient 2-norm to this value before each update (None: off).
    """

    def __init__(self, model: Module, loss_fn: Loss, optimizer: Optimizer,
                 batch_size: int | None = None, warn: bool = True,
                 clip_grad_norm: float | None = None) -> None:
        check_model_loss("compile_step", model, loss_fn)
        self._clip = _checks.clip_option("compile_step", clip_grad_norm)
        self._module_norm = None
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
    def compiled(self) -> bool:
        """True when step(x, y) runs the compiled kernel (re-planned first if the model
        changed since the last call)."""
        if self._kernel is not None and not self._kernel.valid():
            self._setup()
        return self._kernel is not None

    @property
    def clip_grad_norm(self) -> float | None:
        """max_norm of the gradient clipping between backward and the update (None: off);
        may be changed between steps."""
        return self._clip

    @clip_grad_norm.setter
    def clip_grad_norm(self, value: float | None) -> None:
        self._clip = _checks.clip_option("CompiledStep.clip_grad_norm", value)
        if self._kernel is not None:
            self._kernel.clip_grad_norm = self._clip

    @property
    def last_grad_norm(self) -> float | None:
        """The total 2-norm of the gradients (before clipping) in the last step taken with
        clipping on, as ``clip_grad_norm_`` returned it; None before such a step."""
        k = self._kernel
        if k is not None and k.last_grad_norm is not None:
            return k.last_grad_norm
        return self._module_norm

    @property
    def capacity(self) -> int:
        """The largest batch the workspaces hold now (0 on the module path)."""
        return self._kernel.capacity if self._kernel is not None else 0

    def reserve(self, batch_size: int) -> None:
        """Grow the workspaces to hold batches of batch_size rows (no-op when they do)."""
        if self.compiled and self._kernel.capacity < batch_size:
            self._setup(cap=batch_size)

    def _setup(self, cap=None):
        old = self._kernel
        if old is not None and old.last_grad_norm is not None:
            self._module_norm = old.last_grad_norm     # kept across re-planning
        try:
            prog = _program(self.model, self.loss_fn, self.optimizer)
        except CannotCompile as e:
            self._kernel = None
            if self.reason is None and self._warn:
                warnings.warn(f"compile_step: {e}; running the module path instead",
                              RuntimeWarning, stacklevel=user_stacklevel())
            self.reason = str(e)
            return
        self.reason = None
        if cap is not None:
            self._cap = max(self._cap, int(cap))
        cap = max(self._cap, 1)
        plan, dt, widths, needs, want, runs, contribs, acc, mparams = prog
        slots, ops = _arrays(plan, dt, widths, needs, want, runs, contribs, acc, cap)
        s0, s1 = plan.in_slots[0], plan.out_slots[0]
        self.in_features, self.out_features, self.dtype = widths[s0], widths[s1], dt
        nout = widths[s1]
        scratch = [np.empty((cap, nout), dt), np.empty(cap, np.float64),
                   np.empty((cap, widths[s0]), dt), np.empty((cap, nout), dt),
                   np.empty(cap, np.int64)]
        kernel = _ks.StepKernel()
        lf = self.loss_fn
        kernel.setup(self.model, plan if type(self.model) is Graph else None, slots, ops,
                     s0, s1, self.optimizer.params, mparams, self.optimizer, lf,
                     _LOSS_KINDS[type(lf)], cap, dt, scratch, _structure_version,
                     _structure_version[0])
        kernel.clip_grad_norm = self._clip
        self._kernel = kernel

    def _module_step(self, x, y):
        model, lf, opt = self.model, self.loss_fn, self.optimizer
        model.zero_grad()
        opt.zero_grad()
        loss = lf(model(x), y)
        model.backward(lf.backward(), input_grad=False)
        if self._clip is not None:
            self._module_norm = clip_grad_norm_(opt.params, self._clip)
        opt.step()
        return loss

    def __call__(self, x: ArrayLike, y: ArrayLike) -> float:
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

    def grads(self, x: Array, y: Array, correct: Array | None = None) -> float:
        """Forward, loss and backward of one batch, without the update: afterwards each
        parameter's ``.grad`` holds the batch's gradient (as after ``model.zero_grad()``,
        forward, ``model.backward``) and the optimizer is untouched; the caller updates
        (``optimizer.step()``), e.g. after all-reducing the gradients across processes
        (fastnn.distributed).  A non-finite loss skips backward (the gradients then read
        as zero).

        Parameters
        ----------
        x : ndarray
            The batch (M, in_features), the model's dtype.
        y : ndarray
            Integer labels (M,) or targets of the output's shape.
        correct : ndarray, optional
            int64 (1,): receives the number of rows whose argmax is the label
            (classification losses).

        Returns
        -------
        float
            The batch's loss.
        """
        k = self._kernel
        if k is not None and self.model.training:
            loss = k.step(x, y, True, False, correct)
            if loss is None:      # the model changed or the batch is larger: re-plan, retry
                self._setup(cap=len(x) if isinstance(x, np.ndarray) and x.ndim == 2 else None)
                if self._kernel is not None:
                    loss = self._kernel.step(x, y, True, False, correct)
            if loss is not None:
                return loss
        if not self.model.training:
            raise RuntimeError("compiled step: the model is in eval mode; a training step "
                               "needs model.train() (as the module path's backward does)")
        return module_grads(self.model, self.loss_fn, self.optimizer, x, y, correct)

    def run_batches(self, X, Y, perm, first, n_steps, batch_size, losses, correct):
        """Steps first .. first+n_steps-1 of an epoch in one kernel call (the Trainer's
        path): batch s holds rows perm[s*batch_size:(s+1)*batch_size] of X (C-contiguous,
        the model's dtype) and Y (int64 labels or targets), validated once by the caller.
        Writes each step's loss (and correct count) at index s; stops before the update of
        a step whose loss is not finite.  Returns the number of steps completed, or None
        when the model no longer compiles (re-planned first if it changed)."""
        if not self.compiled:
            return None
        self.reserve(batch_size)
        return self._kernel.run_batches(X, Y, perm, first, n_steps, batch_size, losses,
                                        correct)

    def __repr__(self) -> str:
        state = "compiled" if self.compiled else f"module path: {self.reason}"
        return f"CompiledStep({state})"


def module_grads(model: Module, loss_fn: Loss, optimizer: Optimizer, x: Array, y: Array,
                 correct: Array | None = None) -> float:
    """CompiledStep.grads through the modules: zero_grad, forward, loss and (when the loss
    is finite) backward; returns the loss."""
    model.zero_grad()
    optimizer.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    if correct is not None and y.ndim == 1 and y.dtype.kind in "iu":
        correct[0] = int(np.count_nonzero(out.argmax(axis=1) == y))
    if np.isfinite(loss):
        model.backward(loss_fn.backward(), input_grad=False)
    return loss


def compile_step(model: Module, loss_fn: Loss, optimizer: Optimizer, *,
                 batch_size: int | None = None, warn: bool = True,
                 clip_grad_norm: float | None = None) -> CompiledStep:
    """One training step as one compiled call: ``loss = step(x, y)``.

    For a ``Sequential`` (nested ones are flattened) of ``Linear``, ``LayerNorm``,
    ``BatchNorm1d`` and ``Dropout`` layers and Sigmoid, ReLU, Tanh or LeakyReLU
    (negative_slope >= 0) activations (fused into a Linear they follow, else run on their
    own), or a ``Graph`` with one input and one output whose nodes are those layers, those
    activations and the gates Add, Multiply, Maximum, Concat and Split, with an
    ``MSELoss``, ``L1Loss``,
    ``HuberLoss``, ``SmoothL1Loss``, ``BCEWithLogitsLoss``,
    ``CrossEntropyLoss`` (without class weights or label smoothing) or ``SVMLoss`` and a
    fastnn optimizer (``SGD``) over (some of) the
    model's parameters, ``step(x, y)`` runs forward, the loss, backward and the update in one
    nogil kernel call on workspaces allocated once (grown when a larger batch comes).
    It equals::

        model.zero_grad(); optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        fastnn.clip_grad_norm_(optimizer.params, clip_grad_norm)   # only with clip_grad_norm
        optimizer.step()

    with bitwise identical parameters after any number of steps, for either dtype and any
    thread count.  After a step each parameter's ``.grad`` holds that step's gradient and the
    optimizer's state (momentum buffers) and ``steps`` are updated, so compiled and module steps can
    be mixed.  Optimizer hyperparameters are read on every call (schedules work); replacing
    the model's layers, changing a graph or converting the model's dtype re-plans the step on
    the next call.

    x must have the model's dtype; y is an integer label array (classification losses,
    checked against the number of classes) or a target array of the output's shape (the
    elementwise losses).
    Anything else (another optimizer, loss or module type) falls back to exactly the module
    code above behind the same API, with one RuntimeWarning saying why (``warn=False``
    silences it); ``step.compiled`` and ``step.reason`` tell which path runs.

    ``clip_grad_norm=max_norm`` (a float >= 0, or None: off) clips the gradients of the
    optimizer's parameters to a total 2-norm of at most max_norm between backward and the
    update, inside the compiled call, with the kernels and the order of
    ``fastnn.clip_grad_norm_``; ``step.last_grad_norm`` is the last step's total norm
    before clipping.

    Parameters
    ----------
    model : Module
        The network (a Sequential/Linear chain or a one-input, one-output Graph compiles).
    loss_fn : Loss
        The loss.
    optimizer : Optimizer
        A fastnn optimizer over (some of) the model's parameters.
    batch_size : int, optional
        Allocate the workspaces for batches up to this size now (else on first use).
    warn : bool, optional
        Warn (RuntimeWarning) when the model does not compile and the module path runs.
    clip_grad_norm : float, optional
        Clip the total gradient 2-norm to this value before each update (None: off).

    Returns
    -------
    CompiledStep
        Call it as ``loss = step(x, y)``.
    """
    return CompiledStep(model, loss_fn, optimizer, batch_size=batch_size, warn=warn,
                        clip_grad_norm=clip_grad_norm)


def model_features(model):
    """(input features, output features) of a chain or a one-input, one-output Graph where
    they can be read off the model, else None for either."""
    if type(model) in (Sequential, Linear):
        mods = flatten(model, [])
        lins = [m for m in mods if type(m) is Linear]
        return (mods[0].in_features if mods and type(mods[0]) is Linear else None,
                lins[-1].out_features if lins else None)
    if type(model) is Graph:
        try:
            plan, k0 = _graph_plan(model)
            w = _widths(plan, k0)
        except CannotCompile:
            return None, None
        return w[plan.in_slots[0]], w[plan.out_slots[0]]
    return None, None
