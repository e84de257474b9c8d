"""compile_inference / Module.predict: the eval-mode forward of a whole network as one nogil
kernel call, on output buffers allocated once -- for request-time and one-sample-at-a-time
use, where per-layer Python work would dominate.

The program is the compiled training step's (fastnn/_kernels/step.pyx: value slots and ops
built from the one planner's plan, fastnn.nn.plan), forward fields only, run by
``step.InferKernel``; the ops call the very kernels the modules call, so outputs are
bitwise equal to ``model.eval()(x)``.  A model the program cannot express runs the module
path behind the same API (``f.compiled`` / ``f.reason`` say which).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .nn import Graph, Identity, Linear, Module, Sequential
from .nn.layers import Dropout, _Activation
from .nn.module import _structure_version
from .nn.norm import BatchNorm1d, LayerNorm
from .nn.plan import ActStep, DropoutStep, GateStep, LinearStep, NormStep, plan_chain
from .training.compiled import _GATE_OPS, _ROW_OPS, CannotCompile, _widths, flatten
from ._kernels import step as _ks
from ._kernels._core import OpKind

__all__ = ["compile_inference", "InferenceFunction"]


def _plain_activation(m):
    """An activation whose forward is the elementwise kernel (no user override), or
    Softmax / LogSoftmax."""
    return isinstance(m, _Activation) and (
        (type(m)._fwd is _Activation._fwd and m._kernel_exact()) or type(m) is Identity or
        type(m) in _ROW_OPS)


def _forward_plan(model):
    """(plan, input width or None, graph plan or None), or CannotCompile(reason)."""
    if type(model) in (Sequential, Linear):
        # Dropout is the identity in eval mode: left out
        mods = [m for m in flatten(model, []) if type(m) is not Dropout]
        for m in mods:
            if type(m) not in (Linear, LayerNorm, BatchNorm1d) and not _plain_activation(m):
                raise CannotCompile(f"the model has a {type(m).__name__} ({m!r})")
            _check_norm(m)
        if not mods:
            raise CannotCompile("the model has no layers")
        return plan_chain(mods), (mods[0].in_features if type(mods[0]) is Linear
                                  else None), None
    if type(model) is Graph:
        try:
            plan = model._plan or model._build_plan()
        except (RuntimeError, ValueError) as e:
            raise CannotCompile(str(e)) from None
        if len(plan.in_slots) != 1 or len(plan.out_slots) != 1:
            raise CannotCompile(f"the Graph has {len(plan.in_slots)} inputs and "
                                f"{len(plan.out_slots)} outputs; one of each compiles")
        if plan.out_slots[0] == plan.in_slots[0]:
            raise CannotCompile("the Graph's output is its input")
        for st in plan.steps:
            if type(st) is ActStep:
                if not _plain_activation(st.act):
                    raise CannotCompile(f"the graph has a {type(st.act).__name__}")
            elif type(st) is GateStep:
                if type(st.gate) not in _GATE_OPS:
                    raise CannotCompile(f"the graph has a {type(st.gate).__name__}")
            elif type(st) is NormStep:
                _check_norm(st.norm)
            elif type(st) not in (LinearStep, DropoutStep):
                raise CannotCompile(f"the graph has a {type(st.module).__name__} "
                                    f"({st.module!r}) at node {st.index}")
        declared = model._recs[list(model._input_ids.values())[0]].feats[0]
        return plan, declared, plan
    raise CannotCompile(f"the model is a {type(model).__name__}; a Sequential of Linear "
                        "and activation layers, or a Graph of Linear, activation and gate "
                        "nodes with one input and one output, compiles")


def _check_norm(m):
    if type(m) is BatchNorm1d and m.running_mean is None:
        raise CannotCompile(f"{m!r} normalizes with the batch's statistics in eval mode")


def _fold(before, lin, bn, W, b):
    """An eval-mode BatchNorm1d and the Linear it follows (``before`` False) or precedes
    (True) as one Linear, into W, b (computed in float64, then rounded): with
    scale = weight / sqrt(running_var + eps) and shift = bias - running_mean * scale,
    after a Linear  W = W_lin * scale[:, None],  b = b_lin * scale + shift;
    before a Linear W = W_lin * scale[None, :],  b = b_lin + W_lin @ shift
    (b_lin = 0 without a bias)."""
    scale = 1.0 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight._data
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias._data
    W0 = lin.weight._data.astype(np.float64)
    b0 = lin.bias._data if lin.bias is not None else 0.0
    if before:
        np.copyto(W, W0 * scale[None, :], casting="unsafe")
        np.copyto(b, b0 + W0 @ shift, casting="unsafe")
    else:
        np.copyto(W, W0 * scale[:, None], casting="unsafe")
        np.copyto(b, b0 * scale + shift, casting="unsafe")


def _program(plan, widths, cap):
    """The slots (each a (cap, width) buffer; the input slot points at x on each call) and
    the ops' forward fields, as StepKernel's program has them."""
    dt = None
    s0 = plan.in_slots[0]
    lins = [st.lin for st in plan.steps if type(st) is LinearStep]
    if not lins:
        raise CannotCompile("the model has no Linear layer")
    dt = lins[0].weight.dtype
    for lin in lins:
        if lin.weight.dtype != dt:
            raise CannotCompile(f"its layers mix {dt} and {lin.weight.dtype}")
    slots = [{"n": widths[s] or 0,
              "val": None if s == s0 or widths[s] is None else np.empty((cap, widths[s]), dt)}
             for s in range(plan.nslots)]
    ops, params, folds = [], [], []
    readers = {}
    for ins in plan.ins:
        for s_ in ins:
            readers[s_] = readers.get(s_, 0) + 1
    for s_ in plan.out_slots:
        readers[s_] = readers.get(s_, 0) + 1
    pending = None          # a BatchNorm1d folded into the Linear after it: (bn, its input)
    for k, st in enumerate(plan.steps):
        op = {"ins": plan.ins[k], "outs": plan.outs[k], "act": 0, "slope": 0.0, "gop": 0,
              "K": 0, "N": 0, "W": None, "b": None}
        prev = ops[-1] if ops else None
        if type(st) is NormStep and type(st.norm) is BatchNorm1d and prev is not None and \
                prev["kind"] == OpKind.LINEAR and prev["act"] == 0 and \
                prev["outs"] == plan.ins[k] and readers.get(plan.ins[k][0]) == 1 and \
                prev["W"] is prev["lin"].weight._data:
            # an eval-mode BatchNorm1d after a Linear without activation (not folded
            # already), whose output only it reads: folded into that Linear (W, b
            # recomputed before every call)
            lin = prev["lin"]
            if st.norm.dtype != dt:
                raise CannotCompile(f"its layers mix {dt} and {st.norm.dtype}")
            Wf = np.empty_like(lin.weight._data)
            bf = np.empty(lin.out_features, dt)
            folds.append((False, lin, st.norm, Wf, bf))
            prev.update(W=Wf, b=bf, outs=plan.outs[k])
            params += [p for p in (st.norm.weight, st.norm.bias) if p is not None]
            continue
        if type(st) is NormStep and type(st.norm) is BatchNorm1d and st.norm.dtype == dt and \
                k + 1 < len(plan.steps) and type(plan.steps[k + 1]) is LinearStep and \
                plan.ins[k + 1] == plan.outs[k] and readers.get(plan.outs[k][0]) == 1:
            # an eval-mode BatchNorm1d whose output only a Linear reads: folded into it
            pending = (st.norm, plan.ins[k])
            params += [p for p in (st.norm.weight, st.norm.bias) if p is not None]
            continue
        if type(st) is LinearStep:
            lin = st.lin
            op.update(kind=OpKind.LINEAR, act=st.code, slope=float(st.slope),
                      K=lin.in_features, N=lin.out_features, W=lin.weight._data,
                      b=lin.bias._data if lin.bias is not None else None, lin=lin)
            params += [p for p in (lin.weight, lin.bias) if p is not None]
            if pending is not None:
                Wf = np.empty_like(lin.weight._data)
                bf = np.empty(lin.out_features, dt)
                folds.append((True, lin, pending[0], Wf, bf))
                op.update(W=Wf, b=bf, ins=pending[1])
                pending = None
        elif type(st) is ActStep:
            op.update(kind=_ROW_OPS.get(type(st.act), OpKind.ACT), act=st.act._code,
                      slope=float(st.act._slope()))
        elif type(st) is NormStep:
            m = st.norm
            if m.dtype != dt:
                raise CannotCompile(f"its layers mix {dt} and {m.dtype}")
            n = widths[plan.ins[k][0]]
            op.update(W=m.weight._data if m.weight is not None else None,
                      b=m.bias._data if m.bias is not None else None, N=n, K=n, eps=m.eps)
            if type(m) is LayerNorm:
                op.update(kind=OpKind.LAYERNORM)
            else:
                op.update(kind=OpKind.BATCHNORM, st2=np.empty(n, dt), rm=m.running_mean,
                          rv=m.running_var)
            params += [p for p in (m.weight, m.bias) if p is not None]
        elif type(st) is DropoutStep:
            # eval-mode Dropout: the identity (a copy into its slot)
            op.update(kind=OpKind.ACT, act=0, slope=0.0)
        else:
            op.update(kind=OpKind.GATE, gop=_GATE_OPS[type(st.gate)])
        ops.append(op)
    return slots, ops, params, dt, folds


class InferenceFunction:
    """``y = f(x)``: the eval-mode forward of ``model`` in one nogil kernel call (see
    :func:`compile_inference`).

    ``y`` is a view of a buffer ``f`` owns: the next call overwrites it (copy it to keep
    it; ``model.predict(x)`` returns a copy).  Attributes: ``model``, ``compiled`` (False
    when the module path runs), ``reason`` (why not, or None), ``capacity`` (the largest
    batch the buffers hold now); with a compiled model also ``in_features``,
    ``out_features`` and ``dtype``.

    Parameters
    ----------
    model : Module
        The model.
    batch_size : int, optional
        Reserve buffers for batches up to this size now.
    who : str, optional
        How error messages name the caller.
    """

    def __init__(self, model: Module, batch_size: int | None = None, who: str | None = None) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"compile_inference: model must be a fastnn Module, got "
                            f"{type(model).__name__}")
        self.model = model
        self._who = who or f"{type(model).__name__} inference"
        self._kernel = None
        self._folds = []
        self.reason = None
        self._failed_at = None
        self._cap = int(batch_size) if batch_size else 1
        self._setup()

    def _setup(self, cap=None):
        if cap is not None:
            self._cap = max(self._cap, int(cap))
        try:
            plan, k0, gplan = _forward_plan(self.model)
            widths = _widths(plan, k0)
            slots, ops, params, dt, folds = _program(plan, widths, self._cap)
        except CannotCompile as e:
            self._kernel = None
            self.reason = str(e)
            self._failed_at = _structure_version[0]
            return
        s0, s1 = plan.in_slots[0], plan.out_slots[0]
        self.in_features, self.out_features, self.dtype = widths[s0], widths[s1], dt
        self._folds = folds
        k = _ks.InferKernel()
        k.setup(self._who, self.model, gplan, slots, ops, s0, s1, params, self._cap, dt,
                _structure_version, _structure_version[0])
        self._kernel = k
        self.reason = None

    @property
    def compiled(self) -> bool:
        k = self._kernel
        if k is None:
            if self._failed_at != _structure_version[0]:
                self._setup()
        elif not k.valid():
            self._setup()
        return self._kernel is not None

    @property
    def capacity(self) -> int:
        return self._kernel.capacity if self._kernel is not None else 0

    def reserve(self, batch_size: int) -> None:
        """Grow the buffers to hold batches of batch_size rows (no-op when they do)."""
        if self.compiled and self._kernel.capacity < batch_size:
            self._setup(cap=batch_size)

    def __call__(self, *inputs: Any, **named: Any) -> Any:
        k = self._kernel
        if k is not None and len(inputs) == 1 and not named:
            for f in self._folds:
                _fold(*f)
            y = k.run(inputs[0])
            if y is not None:
                return y
        return self._slow(inputs, named)

    def _slow(self, inputs, named):
        """Re-plan when the model or the batch size changed, or run the module path."""
        if self.compiled and len(inputs) == 1 and not named:
            for f in self._folds:
                _fold(*f)
            y = self._kernel.run(inputs[0])
            if y is None:                 # a larger batch: grow the buffers
                self._setup(cap=len(inputs[0]))
                for f in self._folds:
                    _fold(*f)
                y = self._kernel.run(inputs[0])
            return y
        return _module_forward(self.model, inputs, named)

    def __repr__(self) -> str:
        state = "compiled" if self.compiled else f"module path: {self.reason}"
        return f"InferenceFunction({state})"


def _module_forward(model, inputs, named):
    """model.eval()(...) leaving the model's mode as it was."""
    modes = [(m, m.training) for m in model.modules()]
    if not any(t for _, t in modes):
        return model(*inputs, **named)
    model.eval()
    try:
        return model(*inputs, **named)
    finally:
        for m, t in modes:
            object.__setattr__(m, "training", t)


def compile_inference(model: Module, *, batch_size: int | None = None) -> InferenceFunction:
    """The eval-mode forward of ``model`` as one compiled call: ``y = f(x)``.

    For a ``Sequential`` (nested ones flattened) of ``Linear`` layers and activations, or
    a ``Graph`` with one input and one output of Linear, activation and gate nodes, ``f(x)``
    runs the whole forward in one nogil kernel call writing into buffers allocated once
    (grown when a larger batch comes; ``batch_size`` reserves them up front), with outputs
    bitwise equal to ``model.eval()(x)`` for either dtype and any thread count; large
    batches run on the GEMM's threads.  The returned array is that buffer (rows
    ``[:len(x)]``): the next call overwrites it.  x must be 2-D (batch, in_features) of the
    model's dtype; anything else raises naming the model, the expected and the actual
    shape or dtype.  Changing the model (layers replaced, a graph edited, ``.to(dtype)``)
    re-plans on the next call; updating parameters in place (training) needs nothing.
    Other models run the module path (``model.eval()(x)``, leaving the model's mode
    unchanged) behind the same API; ``f.compiled`` and ``f.reason`` tell which.

    Parameters
    ----------
    model : Module
        The model; its mode is not changed.
    batch_size : int, optional
        Reserve buffers for batches up to this size now.

    Returns
    -------
    InferenceFunction
        Call it as ``f(x)`` (a Graph: ``f(x)`` or ``f(name=x)``).
    """
    return InferenceFunction(model, batch_size=batch_size)
