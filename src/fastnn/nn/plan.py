"""The one planner: how containers (Sequential, Graph) and the compiled training step turn
modules into steps.

A **step** is one kernel-level unit of work with one signature:
``forward(xs, trusted) -> output`` (an array, or a tuple for several outputs) and
``backward(g, want, trusted) -> [gradient per input]`` (g: an array, or a list for several
outputs; ``want`` False: parameter gradients only; ``trusted``: the arrays come from fastnn's
own buffers and need no re-validation).  Each step owns its saved state (a ``Ctx``), so a
layer or gate used at several places has one step per use.

    LinearStep   a Linear, fused with the activation that follows it (one kernel each way)
    ActStep      an activation on its own
    DropoutStep  a Dropout (its mask drawn from the module's seed and step counter)
    GateStep     Add / Multiply / Maximum / Concat / Split
    NormStep     a LayerNorm or a BatchNorm1d (one kernel each way)
    ModuleStep   any other module (a nested container, a user module): opaque

**The fusion rule** (``fusable``): a Linear is fused with a Sigmoid / ReLU / Tanh /
LeakyReLU(negative_slope >= 0) / ELU(alpha >= 0) / GELU / SiLU / Softplus that is its only
consumer -- the next module of a chain, or in a graph the only node reading it (and the
Linear is not itself an output).  The first five take their derivative from the output:
the activation runs in the GEMM's writeback.  GELU, SiLU and Softplus need the
pre-activation z = x W^T + b in backward (ops.SAVES_INPUT): in training the GEMM writes z
into a step-owned buffer and one vectorized pass writes act(z) (measured: README, "what
fuses"); in eval mode / inference the activation runs in the writeback, bitwise the same.

A **Plan** is the steps in execution order plus the value slots they read and write:
``ins[k]`` / ``outs[k]`` are step k's input and output slots, ``in_slots`` / ``out_slots``
the network's.  ``flow(input_grad)`` says which steps backward runs and which values need a
gradient.  ``plan_chain`` (Sequential) and ``plan_graph`` (Graph) build plans; the
compiled step (fastnn.training.compiled) reads the same plans.
"""
import heapq

import numpy as np

from .._kernels._core import Activation
from .gates import Concat, Split, _Binary, _Gate
from .layers import Dropout, Identity, Linear, _Activation
from .module import Ctx, Module
from .norm import BatchNorm1d, LayerNorm

__all__ = ["Plan", "LinearStep", "ActStep", "DropoutStep", "GateStep", "NormStep", "ModuleStep",
           "fusable", "reusable", "Container", "plan_chain", "plan_graph", "n_inputs", "n_outputs"]


def fusable(m):
    """Whether activation module `m` runs fused into the Linear before it: its derivative
    is read from its output, and it does not override the elementwise forward."""
    return isinstance(m, _Activation) and type(m) is not Identity and m._fusable() \
        and type(m)._fwd is _Activation._fwd


def reusable(m):
    """Modules that keep their per-use state in the Ctx a step hands them, and so may be
    used at several places of one container."""
    return type(m) in (Linear, LayerNorm, BatchNorm1d) or isinstance(m, (_Activation, _Gate))


def norm_features(m):
    """The feature count of a LayerNorm / BatchNorm1d (its input's and output's width), or
    None for any other module."""
    if type(m) is LayerNorm:
        return m.normalized_shape[0]
    if type(m) is BatchNorm1d:
        return m.num_features
    return None


def has_params(m):
    return next(iter(m.parameters()), None) is not None


# ------------------------------------------------------------------------------- steps
class LinearStep:
    """A Linear, fused with the activation that follows it when there is one: one kernel
    call each way, bitwise equal to running the two modules."""
    __slots__ = ("lin", "act", "code", "slope", "ctx", "index")

    def __init__(self, lin, act, index):
        self.lin, self.act, self.index, self.ctx = lin, act, index, Ctx()
        # fixed for the plan's lifetime (LeakyReLU's slope cannot change)
        self.code = act._code if act is not None else int(Activation.IDENTITY)
        self.slope = act._slope() if act is not None else 0.0

    @property
    def module(self):
        return self.lin

    def forward(self, xs, trusted):
        return self.lin._forward_act(self.ctx, xs[0], self.code, self.slope, trusted)

    def backward(self, g, want, trusted):
        return [self.lin._backward_act(self.ctx, g, self.code, self.slope, want, self._who,
                                       trusted)]

    def _who(self):
        return self.lin._who() if self.act is None else f"{self.lin._who()} + {self.act!r}"


class ActStep:
    __slots__ = ("act", "ctx", "index")

    def __init__(self, act, index):
        self.act, self.index, self.ctx = act, index, Ctx()

    @property
    def module(self):
        return self.act

    def forward(self, xs, trusted):
        return self.act._fwd(self.ctx, xs[0], self.act.training)

    def backward(self, g, want, trusted):
        return [self.act._bwd(self.ctx, g, want, self.act._who)]


class DropoutStep:
    """A Dropout: one per place (the module's step counter advances once per training
    forward, so a Dropout is not reusable within one container)."""
    __slots__ = ("drop", "ctx", "index")

    def __init__(self, drop, index):
        self.drop, self.index, self.ctx = drop, index, Ctx()

    @property
    def module(self):
        return self.drop

    def forward(self, xs, trusted):
        return self.drop._fwd(self.ctx, xs[0], self.drop.training)

    def backward(self, g, want, trusted):
        return [self.drop._bwd(self.ctx, g, want, self.drop._who)]


class GateStep:
    __slots__ = ("gate", "ctx", "index")

    def __init__(self, gate, index):
        self.gate, self.index, self.ctx = gate, index, Ctx()

    @property
    def module(self):
        return self.gate

    def forward(self, xs, trusted):
        return self.gate._fwd(self.ctx, xs, self.gate.training)

    def backward(self, g, want, trusted):
        return self.gate._bwd(self.ctx, g, want)


class NormStep:
    """A LayerNorm or BatchNorm1d (fastnn.nn.norm): one kernel call each way; its state in
    the step's Ctx (a BatchNorm1d used at several places updates its running statistics at
    each, in execution order)."""
    __slots__ = ("norm", "ctx", "index")

    def __init__(self, norm, index):
        self.norm, self.index, self.ctx = norm, index, Ctx()

    @property
    def module(self):
        return self.norm

    def forward(self, xs, trusted):
        return self.norm._fwd(self.ctx, xs[0], trusted)

    def backward(self, g, want, trusted):
        return [self.norm._bwd(self.ctx, g, want, self.norm._who)]


class ModuleStep:
    """Any other module (a nested container, a user module): it keeps its own state, so it
    may appear at one place only."""
    __slots__ = ("m", "n_in", "ctx", "index")

    def __init__(self, m, n_in, index):
        self.m, self.n_in, self.index, self.ctx = m, n_in, index, Ctx()

    @property
    def module(self):
        return self.m

    def forward(self, xs, trusted):
        return self.m.forward(*xs)

    def backward(self, g, want, trusted):
        r = self.m.backward(g, input_grad=want)
        if r is None:
            return [None] * self.n_in
        if isinstance(r, dict):
            r = list(r.values())
        elif isinstance(r, np.ndarray):
            r = [r]
        r = list(r)
        if len(r) != self.n_in:
            raise ValueError(f"{type(self.m).__name__}: backward returned {len(r)} input "
                             f"gradients for {self.n_in} inputs")
        return r


def owns(steps, x):
    """Whether x is (a view of) a buffer one of `steps` (or a module inside one) writes."""
    for st in steps:
        if st.ctx.owns(x):
            return True
        if type(st) is ModuleStep and st.m._owns(x):
            return True
    return False


class Container(Module):
    """What Sequential and Graph share: a plan (``_plan``, built on first use and dropped
    when the structure or the dtype changes), the plan of the last training-mode forward
    (``_ran``, what backward may run), and buffer ownership answered by the plan's steps."""

    def _clear_state(self):
        super()._clear_state()
        if self._plan is not None:
            for st in self._plan.steps:
                st.ctx.clear()
        object.__setattr__(self, "_ran", None)

    def _reset(self):
        super()._reset()
        object.__setattr__(self, "_plan", None)

    def _owns(self, x):
        return self._ctx.owns(x) or (self._plan is not None and owns(self._plan.steps, x))


# -------------------------------------------------------------------------------- plans
class Plan:
    """Steps in execution order and the value slots they read (``ins[k]``) and write
    (``outs[k]``); ``nodes[k]`` is what errors call step k (a chain position or a graph
    node)."""
    __slots__ = ("steps", "nodes", "ins", "outs", "nslots", "in_slots", "out_slots",
                 "_flow")

    def __init__(self, steps, nodes, ins, outs, nslots, in_slots, out_slots):
        self.steps, self.nodes, self.ins, self.outs = steps, nodes, ins, outs
        self.nslots, self.in_slots, self.out_slots = nslots, in_slots, out_slots
        self._flow = {}

    def flow(self, input_grad):
        """(needs, want, skip) for a backward pass: needs[s], whether value s needs a
        gradient (all of them with input_grad, else those that depend on a parameter);
        want[k], whether step k computes its input gradients; skip[k], a step with no
        parameter and nothing to pass back is not run at all."""
        ig = bool(input_grad)
        f = self._flow.get(ig)
        if f is None:
            needs = [ig] * self.nslots
            want, skip = [], []
            for k, st in enumerate(self.steps):
                w = ig or any(needs[s] for s in self.ins[k])
                p = has_params(st.module)
                for s in self.outs[k]:
                    needs[s] = w or p
                want.append(w)
                skip.append(not w and not p)
            f = self._flow[ig] = (needs, want, skip)
        return f


def _step(m, n_in, index, seen, who):
    if type(m) is Linear:
        return LinearStep(m, None, index)
    if isinstance(m, _Activation):
        return ActStep(m, index)
    if isinstance(m, _Gate):
        return GateStep(m, index)
    if type(m) in (LayerNorm, BatchNorm1d):
        return NormStep(m, index)
    if seen is not None:
        if id(m) in seen:
            raise ValueError(who(m))
        seen.add(id(m))
    if type(m) is Dropout:
        return DropoutStep(m, index)
    return ModuleStep(m, n_in, index)


def plan_chain(mods):
    """The plan of modules applied in order: value k+1 = step k(value k); a Linear
    followed by a fusable activation is one step."""
    steps, nodes, i, seen = [], [], 0, set()
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if type(m) is Linear and fusable(nxt):
            steps.append(LinearStep(m, nxt, i))
            nodes.append(i)
            i += 2
            continue
        steps.append(_step(m, 1, i, seen, lambda m, i=i: (
            f"Sequential: {type(m).__name__} at position {i} appears twice; only Linear and "
            "activation modules can be reused within one Sequential")))
        nodes.append(i)
        i += 1
    n = len(steps)
    return Plan(steps, nodes, [[k] for k in range(n)], [[k + 1] for k in range(n)], n + 1,
                [0], [n])


class Rec:
    """One node of a graph: an input (name) or a module applied to earlier values
    (inputs: [(node index, output port)]); feats: the known size of each output's last
    axis (None when unknown)."""
    __slots__ = ("name", "module", "inputs", "n_out", "feats")

    def __init__(self, name, module, inputs, n_out, feats):
        self.name, self.module, self.inputs = name, module, inputs
        self.n_out, self.feats = n_out, feats


def plan_graph(recs, input_ids, outputs, label):
    """The plan of a graph: nodes (Rec) in topological order (ties broken by node index,
    i.e. construction order), one slot per value (node, port), every input with a slot,
    nodes that no output depends on left out.  Raises ValueError for an unknown edge or a
    cycle; label(ref) names a node in messages."""
    n = len(recs)
    for i, r in enumerate(recs):
        for j, p in r.inputs:
            if not 0 <= j < n or not 0 <= p < recs[j].n_out:
                raise ValueError(f"Graph: node {i} ({r.module!r}) reads an unknown node "
                                 f"({j}, output {p})")
    for j, p in outputs:
        if not 0 <= j < n or not 0 <= p < recs[j].n_out:
            raise ValueError(f"Graph: an output refers to an unknown node ({j}, output {p})")
    # the nodes the outputs depend on; others never run
    live, stack = set(), [j for j, _ in outputs]
    while stack:
        i = stack.pop()
        if i not in live:
            live.add(i)
            stack.extend(j for j, _ in recs[i].inputs)
    # topological order (Kahn)
    indeg = dict.fromkeys(live, 0)
    consumers = {i: [] for i in live}
    for i in live:
        for j, _ in recs[i].inputs:
            indeg[i] += 1
            consumers[j].append(i)
    ready = [i for i in live if indeg[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for c in consumers[i]:
            indeg[c] -= 1
            if indeg[c] == 0:
                heapq.heappush(ready, c)
    if len(order) != len(live):
        cyc = sorted(i for i in live if indeg[i] > 0)
        raise ValueError("Graph: the graph has a cycle through nodes " +
                         ", ".join(label((i, 0)) for i in cyc))
    slot = {}
    for i in list(input_ids) + order:
        for p in range(recs[i].n_out):
            slot.setdefault((i, p), len(slot))
    uses = {}
    for i in order:
        for ref in recs[i].inputs:
            uses[ref] = uses.get(ref, 0) + 1
    for ref in outputs:
        uses[ref] = uses.get(ref, 0) + 1
    # the fusion rule: activation node -> the Linear node it runs inside
    fused_into = {}
    for i in order:
        r = recs[i]
        if r.module is not None and fusable(r.module) and len(r.inputs) == 1:
            j, _ = r.inputs[0]
            if type(recs[j].module) is Linear and uses.get((j, 0)) == 1:
                fused_into[i] = j
    fused_away = set(fused_into.values())
    steps, nodes, ins, outs = [], [], [], []
    for i in order:
        r = recs[i]
        if r.module is None or i in fused_away:
            continue
        node = fused_into.get(i, i)          # errors name the Linear's node
        if i in fused_into:
            lin = recs[node]
            st, refs = LinearStep(lin.module, r.module, node), lin.inputs
        else:
            st, refs = _step(r.module, len(r.inputs), node, None, None), r.inputs
        steps.append(st)
        nodes.append(node)
        ins.append([slot[ref] for ref in refs])
        outs.append([slot[(i, p)] for p in range(r.n_out)])
    return Plan(steps, nodes, ins, outs, len(slot), [slot[(i, 0)] for i in input_ids],
                [slot[ref] for ref in outputs])


# ---------------------------------------------------------------- what a module accepts
def n_inputs(m):
    """The number of inputs a module takes (None: any number)."""
    from .graph import Graph
    from .sequential import Sequential
    if isinstance(m, Graph):
        return len(m._input_ids)
    if isinstance(m, (Linear, _Activation, Sequential, Split, LayerNorm, BatchNorm1d, Dropout)):
        return 1
    if isinstance(m, _Gate):
        return m._arity
    return None


def n_outputs(who, m):
    from .graph import Graph
    if isinstance(m, Graph):
        if not m._outputs:
            raise ValueError(f"{who}: the nested Graph has no outputs yet; call output() on it "
                             "before adding it")
        return len(m._outputs)
    if isinstance(m, _Gate):
        return m._n_outputs()
    return 1


def infer_features(who, module, f, lab):
    """Sizes of a module's outputs' last axis where known, from its inputs' (f; lab: their
    labels for messages), checking that the inputs fit the module."""
    if isinstance(module, Linear):
        if f[0] is not None and f[0] != module.in_features:
            raise ValueError(f"{who}: {module._who()} expects {module.in_features} input "
                             f"features, but its input {lab[0]} has {f[0]}")
        return [module.out_features]
    if isinstance(module, (_Activation, Dropout)):
        return [f[0]]
    if type(module) in (LayerNorm, BatchNorm1d):
        n = norm_features(module)
        if f[0] is not None and f[0] != n:
            raise ValueError(f"{who}: {module!r} expects {n} input features, but its input "
                             f"{lab[0]} has {f[0]}")
        return [n]
    if isinstance(module, _Binary):
        if f[0] is not None and f[1] is not None and f[0] != f[1]:
            raise ValueError(f"{who}: {module!r} needs two inputs of the same shape, but "
                             f"{lab[0]} has {f[0]} features and {lab[1]} has {f[1]}")
        return [f[0] if f[0] is not None else f[1]]
    if isinstance(module, Concat):
        return [None if None in f else sum(f)]
    if isinstance(module, Split):
        total = sum(module.sizes)
        if f[0] is not None and f[0] != total:
            raise ValueError(f"{who}: {module!r} needs an input with {total} features "
                             f"(the sizes' sum), but {lab[0]} has {f[0]}")
        return list(module.sizes)
    return None
