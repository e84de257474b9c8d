"""compile_inference / Module.predict: the eval-mode forward of a whole network as one nogil
kernel call, on output buffers allocated once -- for request-time and one-sample-at-a-time
use, where per-layer Python work would dominate.

The program is the compiled training step's (fastnn/_kernels/step.pyx: value slots and ops
built from the one planner's plan, fastnn.nn.plan), forward fields only, run by
``step.InferKernel``; the ops call the very kernels the modules call, so outputs are
bitwise equal to ``model.eval()(x)``.  A model the program cannot express runs the module
path behind the same API (``f.compiled`` / ``f.reason`` say which).
"""
import numpy as np

from .nn import Graph, Identity, Linear, Module, Sequential
from .nn.layers import _Activation
from .nn.module import _structure_version
from .nn.plan import ActStep, GateStep, LinearStep, plan_chain
from .training.compiled import _GATE_OPS, _ROW_OPS, CannotCompile, _widths, flatten
from ._kernels import step as _ks
from ._kernels._core import OpKind

__all__ = ["compile_inference", "InferenceFunction"]


def _plain_activation(m):
    """An activation whose forward is the elementwise kernel (no user override), or
    Softmax / LogSoftmax."""
    return isinstance(m, _Activation) and (type(m)._fwd is _Activation._fwd or
                                           type(m) is Identity or type(m) in _ROW_OPS)


def _forward_plan(model):
    """(plan, input width or None, graph plan or None), or CannotCompile(reason)."""
    if type(model) in (Sequential, Linear):
        mods = flatten(model, [])
        for m in mods:
            if type(m) is not Linear and not _plain_activation(m):
                raise CannotCompile(f"the model has a {type(m).__name__} ({m!r})")
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
            elif type(st) is not LinearStep:
                raise CannotCompile(f"the graph has a {type(st.module).__name__} "
                                    f"({st.module!r}) at node {st.index}")
        declared = model._recs[list(model._input_ids.values())[0]].feats[0]
        return plan, declared, plan
    raise CannotCompile(f"the model is a {type(model).__name__}; a Sequential of Linear "
                        "and activation layers, or a Graph of Linear, activation and gate "
                        "nodes with one input and one output, compiles")


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
    ops, params = [], []
    for k, st in enumerate(plan.steps):
        op = {"ins": plan.ins[k], "outs": plan.outs[k], "act": 0, "slope": 0.0, "gop": 0,
              "K": 0, "N": 0, "W": None, "b": None}
        if type(st) is LinearStep:
            lin = st.lin
            op.update(kind=OpKind.LINEAR, act=st.code, slope=float(st.slope),
                      K=lin.in_features, N=lin.out_features, W=lin.weight._data,
                      b=lin.bias._data if lin.bias is not None else None)
            params += [p for p in (lin.weight, lin.bias) if p is not None]
        elif type(st) is ActStep:
            op.update(kind=_ROW_OPS.get(type(st.act), OpKind.ACT), act=st.act._code,
                      slope=float(st.act._slope()))
        else:
            op.update(kind=OpKind.GATE, gop=_GATE_OPS[type(st.gate)])
        ops.append(op)
    return slots, ops, params, dt


class InferenceFunction:
    """``y = f(x)``: the eval-mode forward of ``model`` in one nogil kernel call (see
    :func:`compile_inference`).

    ``y`` is a view of a buffer ``f`` owns: the next call overwrites it (copy it to keep
    it; ``model.predict(x)`` returns a copy).  Attributes: ``model``, ``compiled`` (False
    when the module path runs), ``reason`` (why not, or None), ``capacity`` (the largest
    batch the buffers hold now); with a compiled model also ``in_features``,
    ``out_features`` and ``dtype``.
    """

    def __init__(self, model, batch_size=None, who=None):
        if not isinstance(model, Module):
            raise TypeError(f"compile_inference: model must be a fastnn Module, got "
                            f"{type(model).__name__}")
        self.model = model
        self._who = who or f"{type(model).__name__} inference"
        self._kernel = None
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
            slots, ops, params, dt = _program(plan, widths, self._cap)
        except CannotCompile as e:
            self._kernel = None
            self.reason = str(e)
            self._failed_at = _structure_version[0]
            return
        s0, s1 = plan.in_slots[0], plan.out_slots[0]
        self.in_features, self.out_features, self.dtype = widths[s0], widths[s1], dt
        k = _ks.InferKernel()
        k.setup(self._who, self.model, gplan, slots, ops, s0, s1, params, self._cap, dt,
                _structure_version, _structure_version[0])
        self._kernel = k
        self.reason = None

    @property
    def compiled(self):
        k = self._kernel
        if k is None:
            if self._failed_at != _structure_version[0]:
                self._setup()
        elif not k.valid():
            self._setup()
        return self._kernel is not None

    @property
    def capacity(self):
        return self._kernel.capacity if self._kernel is not None else 0

    def reserve(self, batch_size):
        """Grow the buffers to hold batches of batch_size rows (no-op when they do)."""
        if self.compiled and self._kernel.capacity < batch_size:
            self._setup(cap=batch_size)

    def __call__(self, *inputs, **named):
        k = self._kernel
        if k is not None and len(inputs) == 1 and not named:
            y = k.run(inputs[0])
            if y is not None:
                return y
        return self._slow(inputs, named)

    def _slow(self, inputs, named):
        """Re-plan when the model or the batch size changed, or run the module path."""
        if self.compiled and len(inputs) == 1 and not named:
            y = self._kernel.run(inputs[0])
            if y is None:                 # a larger batch: grow the buffers
                self._setup(cap=len(inputs[0]))
                y = self._kernel.run(inputs[0])
            return y
        return _module_forward(self.model, inputs, named)

    def __repr__(self):
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


def compile_inference(model, *, batch_size=None):
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
    """
    return InferenceFunction(model, batch_size=batch_size)
