"""Computational graphs of modules: ``Graph`` and the gates ``Add``, ``Multiply``,
``Maximum``, ``Concat`` and ``Split``.

A Graph runs its modules in topological order (computed once) and backpropagates in reverse
order, as in the lecture's model of backpropagation: the add gate distributes the gradient,
the max gate routes it, the multiply gate swaps its inputs, and where a value branches the
gradients from its consumers are summed (in a fixed order, into buffers the graph owns).

    g = fnn.Graph()
    x = g.input("x")
    h = g.add(fnn.ReLU(), g.add(fnn.Linear(64, 64), x))
    s = g.add(fnn.Add(), h, g.add(fnn.Linear(64, 64), x))    # a skip connection
    g.output(g.add(fnn.Linear(64, 10), s))
    y = g(X)                  # or g(x=X)
    grads = g.backward(dy)    # {"x": dL/dX}; parameter gradients accumulate

Memory follows the rest of fastnn: in training mode every step keeps what its backward
needs and writes into buffers it owns and reuses (a steady-state step allocates no arrays),
so returned outputs and gradients are overwritten by the next forward / backward; an
eval-mode forward keeps nothing and returns fresh arrays.
"""
import heapq
import math

import numpy as np

from ._kernels import gates as _gates
from .modules import (Identity, Linear, Module, Sequential, _Activation, _Ctx, _buf,
                      _check_array, _name, _prefixed)
from .ops import _may_share, _rowmajor, specialized

__all__ = ["Graph", "Node", "Add", "Multiply", "Maximum", "Concat", "Split"]

_BIN_FWD = specialized(_gates._binary_forward)
_BIN_BWD = specialized(_gates._binary_backward)
_COPY = specialized(_gates._copy_rows)
_OP_ADD, _OP_MUL, _OP_MAX = 0, 1, 2


def _flat2(x):
    """x as a 2-D view (rows, last axis) with a unit column stride (copied only if needed)."""
    if x.ndim != 2:
        x = x.reshape(math.prod(x.shape[:-1]), x.shape[-1]) if x.ndim else x.reshape(1, 1)
    return _rowmajor(x)


def _obuf(ctx, key, shape, dtype, avoid):
    """_buf that avoids every array in `avoid` (a step may read several)."""
    a = _buf(ctx, key, shape, dtype, avoid[0])
    for x in avoid[1:]:
        if a is x or (x.base is not None and x.size and _may_share(a, x)):
            a = np.empty(shape, dtype)
            ctx.bufs[key] = a
    return a


def _not_run(who):
    return RuntimeError(f"{_name(who)}: backward() called before a training-mode forward(); an "
                        "eval-mode forward keeps nothing for backward (call .train() first)")


# --------------------------------------------------------------------------------- gates
class _Gate(Module):
    """A parameter-free module of the graph.  ``_fwd(ctx, inputs, training)`` and
    ``_bwd(ctx, grad_out, input_grad)`` keep their state in the `ctx` they are given, so one
    gate may be used at several places of a Graph (each use has its own ctx)."""
    _arity = None        # the number of inputs, None for any number >= 1

    def _who(self):
        return repr(self)

    def _config(self):
        return {}

    def _n_outputs(self):
        return 1

    def forward(self, *inputs):
        return self._fwd(self._ctx, inputs, self.training)

    def backward(self, grad_out, input_grad=True):
        """The gradients w.r.t. the inputs: one array for a one-input gate, else a tuple
        (None when input_grad is False)."""
        gs = self._bwd(self._ctx, grad_out, input_grad)
        if gs is None:
            return None
        return gs[0] if len(gs) == 1 else tuple(gs)

    def _inputs(self, xs):
        who = self._who
        if self._arity is not None and len(xs) != self._arity:
            raise TypeError(f"{who()}: takes {self._arity} inputs, got {len(xs)}")
        if not xs:
            raise TypeError(f"{who()}: takes at least one input, got none")
        out = [_check_array(who, f"input {k}", x) for k, x in enumerate(xs)]
        dt = out[0].dtype
        for k, x in enumerate(out[1:], 1):
            if x.dtype != dt:
                raise TypeError(f"{who()}: input {k} has dtype {x.dtype} but input 0 has {dt}; "
                                f"convert one of them (e.g. .astype(np.{dt}))")
        return out

    def _grad(self, ctx, grad_out, dtype, shape):
        grad_out = _check_array(self._who, "grad_out", grad_out, dtype)
        if grad_out.shape != shape:
            raise ValueError(f"{self._who()}: grad_out must have the output's shape {shape}, "
                             f"got {grad_out.shape}")
        return grad_out


class _Binary(_Gate):
    """An elementwise gate of two inputs of one shape (no broadcasting)."""
    _arity = 2
    _op = _OP_ADD
    _keeps_inputs = True     # multiply / maximum read both inputs in backward

    def _fwd(self, ctx, xs, training):
        a, b = self._inputs(xs)
        if a.shape != b.shape:
            raise ValueError(f"{self._who()}: the inputs must have the same shape (no "
                             f"broadcasting), got {a.shape} and {b.shape}")
        shape, dt = a.shape, a.dtype
        a2, b2 = _flat2(a), _flat2(b)
        if training:
            out = _obuf(ctx, "out", a2.shape, dt, (a2, b2))
        else:
            out = np.empty(a2.shape, dt)
        _BIN_FWD[dt](a2, b2, out, self._op)
        if training:
            ctx.x = (a2, b2) if self._keeps_inputs else None
            ctx.y = out
            ctx.shape = shape
        return out.reshape(shape) if out.shape != shape else out

    def _bwd(self, ctx, grad_out, input_grad):
        y = ctx.y
        if y is None:
            raise _not_run(self._who)
        g = self._grad(ctx, grad_out, y.dtype, ctx.shape)
        if not input_grad:
            return None
        g2 = _flat2(g)
        a2, b2 = ctx.x
        ga = _obuf(ctx, "ga", y.shape, y.dtype, (g2, a2, b2))
        gb = _obuf(ctx, "gb", y.shape, y.dtype, (g2, a2, b2))
        _BIN_BWD[y.dtype](g2, a2, b2, ga, gb, self._op, True, True)
        if y.shape != ctx.shape:
            return [ga.reshape(ctx.shape), gb.reshape(ctx.shape)]
        return [ga, gb]


class Add(_Binary):
    """y = a + b (elementwise, same shapes).  Backward distributes: both inputs receive
    grad_out itself (no copy)."""
    _op = _OP_ADD
    _keeps_inputs = False

    def _bwd(self, ctx, grad_out, input_grad):
        if ctx.y is None:
            raise _not_run(self._who)
        g = self._grad(ctx, grad_out, ctx.y.dtype, ctx.shape)
        return [g, g] if input_grad else None


class Multiply(_Binary):
    """y = a * b (elementwise, same shapes).  Backward swaps: da = dy * b, db = dy * a
    (both inputs are kept from the forward: do not modify them before backward)."""
    _op = _OP_MUL


class Maximum(_Binary):
    """y = max(a, b) (elementwise, same shapes).  Backward routes dy to the input that was
    chosen; a tie goes to the first input.  A NaN propagates (as numpy.maximum) and receives
    the gradient."""
    _op = _OP_MAX


def _axis(who, axis):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (1, -1):
        raise ValueError(f"{who}: only axis=1 (the columns of 2-D inputs) is supported, got "
                         f"axis={axis!r}")
    return 1


class Concat(_Gate):
    """y = the inputs side by side along axis 1: 2-D inputs (batch, n_k) of one dtype and
    batch give (batch, sum n_k).  Backward hands each input its block of columns."""

    def __init__(self, axis=1):
        super().__init__()
        object.__setattr__(self, "axis", _axis("Concat", axis))

    def extra_repr(self):
        return f"axis={self.axis}"

    def _config(self):
        return {"axis": self.axis}

    def _fwd(self, ctx, xs, training):
        xs = self._inputs(xs)
        who = self._who
        for k, x in enumerate(xs):
            if x.ndim != 2:
                raise ValueError(f"{who()}: input {k} must be 2-D (batch, features), got "
                                 f"shape {x.shape}")
            if x.shape[0] != xs[0].shape[0]:
                raise ValueError(f"{who()}: input {k} has {x.shape[0]} rows but input 0 has "
                                 f"{xs[0].shape[0]} (shapes {x.shape} and {xs[0].shape})")
        dt = xs[0].dtype
        widths = tuple(x.shape[1] for x in xs)
        shape = (xs[0].shape[0], sum(widths))
        xs = [_rowmajor(x) for x in xs]
        if training:
            out = _obuf(ctx, "out", shape, dt, xs)
        else:
            out = np.empty(shape, dt)
        copy = _COPY[dt]
        off = 0
        for x, n in zip(xs, widths):
            copy(x, out[:, off:off + n])
            off += n
        if training:
            ctx.x = widths
            ctx.y = out
            ctx.shape = shape
        return out

    def _bwd(self, ctx, grad_out, input_grad):
        y = ctx.y
        if y is None:
            raise _not_run(self._who)
        g = _rowmajor(self._grad(ctx, grad_out, y.dtype, ctx.shape))
        if not input_grad:
            return None
        copy = _COPY[y.dtype]
        gs, off = [], 0
        for k, n in enumerate(ctx.x):
            gk = _obuf(ctx, f"g{k}", (ctx.shape[0], n), y.dtype, (g,))
            copy(g[:, off:off + n], gk)
            gs.append(gk)
            off += n
        return gs


class Split(_Gate):
    """The columns of one 2-D input (batch, sum(sizes)) cut into blocks (batch, sizes[k]):
    several outputs.  In a Graph, ``g.add(Split([32, 32]), h)`` returns a tuple of nodes.
    Backward takes one gradient per output (a list; None for an unused output counts as
    zero) and returns the input's gradient."""
    _arity = 1

    def __init__(self, sizes, axis=1):
        super().__init__()
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"Split: sizes must be a list of ints, got {sizes!r}") from None
        if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                            or s < 1 for s in sizes):
            raise ValueError(f"Split: sizes must be a non-empty list of ints >= 1, got {sizes!r}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        object.__setattr__(self, "axis", _axis("Split", axis))

    def extra_repr(self):
        return f"{list(self.sizes)}"

    def _config(self):
        return {"sizes": list(self.sizes), "axis": self.axis}

    def _n_outputs(self):
        return len(self.sizes)

    def _fwd(self, ctx, xs, training):
        (x,) = self._inputs(xs)
        who = self._who
        total = sum(self.sizes)
        if x.ndim != 2 or x.shape[1] != total:
            raise ValueError(f"{who()}: input must be 2-D (batch, {total}) (the sizes sum to "
                             f"{total}), got shape {x.shape}")
        x = _rowmajor(x)
        dt, m = x.dtype, x.shape[0]
        copy = _COPY[dt]
        outs, off = [], 0
        for k, n in enumerate(self.sizes):
            o = _obuf(ctx, f"out{k}", (m, n), dt, (x,)) if training else np.empty((m, n), dt)
            copy(x[:, off:off + n], o)
            outs.append(o)
            off += n
        if training:
            ctx.y = tuple(outs)
            ctx.shape = x.shape
        return tuple(outs)

    def _bwd(self, ctx, grad_out, input_grad):
        ys = ctx.y
        if ys is None:
            raise _not_run(self._who)
        who = self._who
        k = len(self.sizes)
        if isinstance(grad_out, np.ndarray) and k == 1:
            grad_out = [grad_out]
        if not isinstance(grad_out, (list, tuple)) or len(grad_out) != k:
            raise TypeError(f"{who()}: backward takes a list of {k} gradients (one per output, "
                            f"None for an unused one), got {type(grad_out).__name__}"
                            + (f" of length {len(grad_out)}"
                               if isinstance(grad_out, (list, tuple)) else ""))
        gs = [None if g is None else _rowmajor(self._grad(ctx, g, y.dtype, y.shape))
              for g, y in zip(grad_out, ys)]
        if not input_grad:
            return None
        dt = ys[0].dtype
        gx = _obuf(ctx, "gx", ctx.shape, dt, [g for g in gs if g is not None] or [ys[0]])
        copy = _COPY[dt]
        off = 0
        for g, n in zip(gs, self.sizes):
            if g is None:
                gx[:, off:off + n] = 0
            else:
                copy(g, gx[:, off:off + n])
            off += n
        return [gx]


# --------------------------------------------------------------------------------- graph
class Node:
    """A value of a Graph: one of its inputs, or one output of a module added to it.  Only
    meaningful to the graph that returned it."""
    __slots__ = ("graph", "index", "port")

    def __init__(self, graph, index, port=0):
        self.graph, self.index, self.port = graph, index, port

    def __repr__(self):
        return f"Node({self.graph._label((self.index, self.port))})"


class _Rec:
    """One node of the graph: an input (name) or a module applied to earlier values
    (inputs: [(node index, output port)]); feats: the known size of each output's last
    axis (None when unknown)."""
    __slots__ = ("name", "module", "inputs", "n_out", "feats")

    def __init__(self, name, module, inputs, n_out, feats):
        self.name, self.module, self.inputs = name, module, inputs
        self.n_out, self.feats = n_out, feats


def _reusable(m):
    # these keep their per-use state in the ctx the graph hands them
    return type(m) is Linear or isinstance(m, (_Activation, _Gate))


def _fusable(act):
    return isinstance(act, _Activation) and type(act) is not Identity and act._fusable() \
        and type(act)._fwd is _Activation._fwd


def _has_params(m):
    return next(iter(m.parameters()), None) is not None


# Steps of a plan.  forward(xs) -> one array or a tuple (several outputs);
# backward(g, want) -> the input gradients as a list (g: an array, or a list for several
# outputs; want False: parameter gradients only).
class _LinStep:
    """A Linear, fused with the activation that is its only consumer when there is one:
    one kernel call each way, bitwise equal to running the two modules."""
    __slots__ = ("lin", "act", "code", "slope", "ctx")

    def __init__(self, lin, act):
        self.lin, self.act, self.ctx = lin, act, _Ctx()
        self.code = act._code if act is not None else 0
        self.slope = act._slope() if act is not None else 0.0

    def forward(self, xs):
        return self.lin._forward_act(self.ctx, xs[0], self.code, self.slope)

    def backward(self, g, want):
        return [self.lin._backward_act(self.ctx, g, self.code, self.slope, want, self._who)]

    def _who(self):
        return self.lin._who() if self.act is None else f"{self.lin._who()} + {self.act!r}"


class _ActStep:
    __slots__ = ("act", "ctx")

    def __init__(self, act):
        self.act, self.ctx = act, _Ctx()

    def forward(self, xs):
        return self.act._fwd(self.ctx, xs[0], self.act.training)

    def backward(self, g, want):
        return [self.act._bwd(self.ctx, g, want, self.act._who)]


class _GateStep:
    __slots__ = ("gate", "ctx")

    def __init__(self, gate):
        self.gate, self.ctx = gate, _Ctx()

    def forward(self, xs):
        return self.gate._fwd(self.ctx, xs, self.gate.training)

    def backward(self, g, want):
        return self.gate._bwd(self.ctx, g, want)


class _ModStep:
    """Any other module (a Sequential, a nested Graph, a user module): it keeps its own
    state, so it may appear at one place only."""
    __slots__ = ("m", "ctx", "n_in")

    def __init__(self, m, n_in):
        self.m, self.ctx, self.n_in = m, _Ctx(), n_in

    def forward(self, xs):
        return self.m.forward(*xs)

    def backward(self, g, want):
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


class _Plan:
    """What running the graph needs, computed once: the steps in topological order and the
    slots (one per value) they read and write."""
    __slots__ = ("steps", "nodes", "ins", "outs", "nslots", "in_slots", "out_slots", "needs",
                 "want", "skip", "out_meta", "in_meta", "gbufs", "zbufs")


class Graph(Module):
    """A network as a directed acyclic graph of modules (see the module docstring).

    ``input(name)`` declares an input, ``add(module, *nodes)`` applies a module to earlier
    values (a Split returns a tuple of nodes), ``output(*nodes)`` declares the outputs.
    ``g(X)`` / ``g(x=X)`` returns the output (a tuple when there are several);
    ``g.backward(dy)`` takes one gradient per output (a tuple or list for several, in output
    order; None for one that gets no gradient) and returns ``{input name: gradient}``, or
    None with ``input_grad=False``.

    A module used at several places shares its parameters and accumulates the gradients of
    every use (Linear, activations and gates; other modules keep their own state and may
    appear once).  A Linear whose only consumer is a Sigmoid, ReLU, Tanh or LeakyReLU
    (negative_slope >= 0) runs fused with it, as in Sequential.  Nodes that no output
    depends on are never run.
    """

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "_recs", [])
        object.__setattr__(self, "_input_ids", {})     # name -> node index, in order
        object.__setattr__(self, "_outputs", [])       # [(node index, port)]
        object.__setattr__(self, "_mod_name", {})      # id(module) -> registered name
        object.__setattr__(self, "_plan", None)
        object.__setattr__(self, "_ran", None)

    # -- building
    def _invalidate(self):
        object.__setattr__(self, "_plan", None)
        object.__setattr__(self, "_ran", None)

    def input(self, name, features=None):
        """Declare an input (called ``name`` in ``g(name=X)`` and in backward's dict).
        ``features`` (optional) is the size of its last axis: it is checked on every call
        and lets ``add`` check the shapes of the modules it feeds."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"Graph.input: name must be a non-empty str, got {name!r}")
        if name in self._input_ids:
            raise ValueError(f"Graph.input: there is already an input named {name!r}")
        if features is not None and (isinstance(features, bool) or
                                     not isinstance(features, (int, np.integer)) or
                                     features < 0):
            raise ValueError(f"Graph.input: features must be an int >= 0 or None, got "
                             f"{features!r}")
        i = len(self._recs)
        self._recs.append(_Rec(name, None, [], 1,
                               [None if features is None else int(features)]))
        self._input_ids[name] = i
        self._invalidate()
        return Node(self, i)

    def _ref(self, who, what, node):
        if isinstance(node, (tuple, list)) and node and all(isinstance(n, Node) for n in node):
            raise TypeError(f"{who}: {what} is a tuple of {len(node)} nodes (a module with "
                            "several outputs, e.g. Split, returns one node per output); pass "
                            "one of them")
        if not isinstance(node, Node):
            raise TypeError(f"{who}: {what} must be a Node returned by this graph's input() or "
                            f"add(), got {type(node).__name__}")
        if node.graph is not self:
            raise ValueError(f"{who}: {what} is {node!r} of another Graph; nodes cannot be "
                             "shared between graphs")
        return (node.index, node.port)

    def add(self, module, *inputs):
        """Apply ``module`` to the values ``inputs`` (nodes); returns its output node (a
        tuple of nodes for a module with several outputs, such as Split)."""
        who = "Graph.add"
        if not isinstance(module, Module):
            raise TypeError(f"{who}: expected a fastnn Module, got {type(module).__name__}")
        refs = [self._ref(who, f"input {k} of {module!r}", n) for k, n in enumerate(inputs)]
        i = self._append(who, module, refs)
        nodes = tuple(Node(self, i, p) for p in range(self._recs[i].n_out))
        if isinstance(module, Split) or len(nodes) > 1:
            return nodes
        return nodes[0]

    def _append(self, who, module, refs):
        """Add a module node reading `refs`; checks everything that can be checked now.
        (Refs pointing at later nodes only occur in records being loaded.)"""
        if module is self or any(m is self for m in module.modules()):
            raise ValueError(f"{who}: a Graph cannot contain itself (that would be a cycle)")
        if not refs:
            raise TypeError(f"{who}: {module!r} needs at least one input node")
        n_out = _n_outputs(who, module)
        n_in = _n_inputs(module)
        if n_in is not None and len(refs) != n_in:
            raise TypeError(f"{who}: {module!r} takes {n_in} input{'s' * (n_in != 1)}, got "
                            f"{len(refs)}")
        first = self._mod_name.get(id(module))
        if first is not None and not _reusable(module):
            raise ValueError(
                f"{who}: {type(module).__name__} is already used at node {first}; only "
                "Linear, activation and gate modules can be used at several places of one "
                "Graph (other modules keep their own state for backward)")
        i = len(self._recs)
        if all(0 <= j < i and 0 <= p < self._recs[j].n_out for j, p in refs):
            feats = self._infer(who, module, refs, n_out)
        else:
            feats = [None] * n_out
        if first is None:
            name = str(i)
            setattr(self, name, module)          # registered once, under its first node
            self._mod_name[id(module)] = name
        self._recs.append(_Rec(None, module, refs, n_out, feats))
        self._invalidate()
        return i

    def _infer(self, who, module, refs, n_out):
        """Sizes of the outputs' last axis where known, checking the module's inputs."""
        f = [self._recs[j].feats[p] if p < self._recs[j].n_out else None for j, p in refs]
        lab = [self._label(r) for r in refs]
        if isinstance(module, Linear):
            if f[0] is not None and f[0] != module.in_features:
                raise ValueError(f"{who}: {module._who()} expects {module.in_features} input "
                                 f"features, but its input {lab[0]} has {f[0]}")
            return [module.out_features]
        if isinstance(module, _Activation):
            return [f[0]]
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
        return [None] * n_out

    def output(self, *nodes):
        """Declare output(s), in order (each call appends)."""
        if not nodes:
            raise TypeError("Graph.output: pass at least one node")
        refs = [self._ref("Graph.output", f"output {len(self._outputs) + k}", n)
                for k, n in enumerate(nodes)]
        self._outputs.extend(refs)
        self._invalidate()

    @property
    def input_names(self):
        """The inputs' names, in declaration order."""
        return list(self._input_ids)

    @property
    def n_outputs(self):
        return len(self._outputs)

    def _label(self, ref):
        i, p = ref
        if not 0 <= i < len(self._recs):
            return f"node {i} (unknown)"
        r = self._recs[i]
        if r.module is None:
            return f"input {r.name!r}"
        s = f"node {i} ({r.module!r})"
        return s if r.n_out == 1 else f"{s} output {p}"

    def _short(self, ref):
        i, p = ref
        r = self._recs[i]
        if r.module is None:
            return r.name
        return str(i) if r.n_out == 1 else f"{i}.{p}"

    # -- the plan
    def _build_plan(self):
        recs, n = self._recs, len(self._recs)
        if not self._outputs:
            raise RuntimeError("Graph: the graph has no outputs; declare them with "
                               "g.output(node) before running it")
        # every edge must point at an existing node and output port
        for i, r in enumerate(recs):
            for j, p in r.inputs:
                if not 0 <= j < n or not 0 <= p < recs[j].n_out:
                    raise ValueError(f"Graph: node {i} ({r.module!r}) reads an unknown node "
                                     f"({j}, output {p})")
        for j, p in self._outputs:
            if not 0 <= j < n or not 0 <= p < recs[j].n_out:
                raise ValueError(f"Graph: an output refers to an unknown node ({j}, output {p})")
        # the nodes the outputs depend on; others never run
        live, stack = set(), [j for j, _ in self._outputs]
        while stack:
            i = stack.pop()
            if i not in live:
                live.add(i)
                stack.extend(j for j, _ in recs[i].inputs)
        # topological order (Kahn); ties broken by node index, i.e. construction order
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
                             ", ".join(self._label((i, 0)) for i in cyc))
        # one slot per value (node, port); every input has a slot, used or not
        slot = {}
        for i in list(self._input_ids.values()) + order:
            for p in range(recs[i].n_out):
                slot.setdefault((i, p), len(slot))
        uses = {}
        for i in order:
            for ref in recs[i].inputs:
                uses[ref] = uses.get(ref, 0) + 1
        for ref in self._outputs:
            uses[ref] = uses.get(ref, 0) + 1
        # fusion: a Linear whose only use is a fusable activation runs inside that step
        fused_into = {}       # activation node -> Linear node
        for i in order:
            r = recs[i]
            if r.module is not None and _fusable(r.module) and len(r.inputs) == 1:
                j, _ = r.inputs[0]
                if type(recs[j].module) is Linear and uses.get((j, 0)) == 1:
                    fused_into[i] = j
        fused_away = set(fused_into.values())
        P = _Plan()
        P.steps, P.nodes, P.ins, P.outs = [], [], [], []
        for i in order:
            r = recs[i]
            if r.module is None or i in fused_away:
                continue
            m = r.module
            if i in fused_into:
                lin_rec = recs[fused_into[i]]
                st, ins = _LinStep(lin_rec.module, m), lin_rec.inputs
            elif type(m) is Linear:
                st, ins = _LinStep(m, None), r.inputs
            elif isinstance(m, _Activation):
                st, ins = _ActStep(m), r.inputs
            elif isinstance(m, _Gate):
                st, ins = _GateStep(m), r.inputs
            else:
                st, ins = _ModStep(m, len(r.inputs)), r.inputs
            P.steps.append(st)
            P.nodes.append(fused_into.get(i, i))     # errors name the Linear's node
            P.ins.append([slot[ref] for ref in ins])
            P.outs.append([slot[(i, p)] for p in range(r.n_out)])
        P.nslots = len(slot)
        P.in_slots = [slot[(i, 0)] for i in self._input_ids.values()]
        P.out_slots = [slot[ref] for ref in self._outputs]
        # which values need a gradient: all of them with input_grad, else those that
        # depend on a parameter (want: a step computes input gradients; skip: a step with
        # no parameter and nothing to pass back is not run at all)
        P.needs, P.want, P.skip = {}, {}, {}
        for ig in (True, False):
            needs = [ig] * P.nslots
            want, skip = [], []
            for k, st in enumerate(P.steps):
                w = ig or any(needs[s] for s in P.ins[k])
                has_p = _has_params(st.m if type(st) is _ModStep else
                                    st.lin if type(st) is _LinStep else
                                    st.act if type(st) is _ActStep else st.gate)
                for s in P.outs[k]:
                    needs[s] = w or has_p
                want.append(w)
                skip.append(not w and not has_p)
            P.needs[ig], P.want[ig], P.skip[ig] = needs, want, skip
        P.out_meta = None
        P.in_meta = None
        P.gbufs = {}
        P.zbufs = {}
        object.__setattr__(self, "_plan", P)
        return P

    # -- running
    def _bind(self, args, kwargs):
        names = list(self._input_ids)
        if len(args) > len(names):
            raise TypeError(f"Graph: takes {len(names)} input{'s' * (len(names) != 1)} "
                            f"{names}, got {len(args)} positional arguments")
        given = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in self._input_ids:
                raise TypeError(f"Graph: unknown input {k!r}; the graph's inputs are {names}")
            if k in given:
                raise TypeError(f"Graph: input {k!r} given twice (by position and by name)")
            given[k] = v
        missing = [k for k in names if k not in given]
        if missing:
            raise TypeError(f"Graph: missing input{'s' * (len(missing) != 1)} "
                            f"{', '.join(map(repr, missing))} (the graph's inputs are {names})")
        xs = []
        for k in names:
            x = given[k]
            if not isinstance(x, np.ndarray):
                raise TypeError(f"Graph: input {k!r} must be a numpy.ndarray, got "
                                f"{type(x).__name__}")
            f = self._recs[self._input_ids[k]].feats[0]
            if f is not None and (x.ndim == 0 or x.shape[-1] != f):
                raise ValueError(f"Graph: input {k!r} must have {f} features (last axis), got "
                                 f"shape {x.shape}")
            xs.append(x)
        return xs

    def forward(self, *args, **kwargs):
        P = self._plan or self._build_plan()
        xs = self._bind(args, kwargs)
        training = self.training
        if training:
            # an input that is one of our own buffers (e.g. an output fed back in) would be
            # overwritten during this forward while a step keeps it for backward
            xs = [x.copy() if x.size and self._owns(x) else x for x in xs]
        vals = [None] * P.nslots
        for s, x in zip(P.in_slots, xs):
            vals[s] = x
        k = 0
        try:
            for k, st in enumerate(P.steps):
                res = st.forward([vals[s] for s in P.ins[k]])
                outs = P.outs[k]
                if len(outs) == 1:
                    vals[outs[0]] = res
                else:
                    if not isinstance(res, (tuple, list)) or len(res) != len(outs):
                        raise ValueError(f"{type(st.m).__name__}: forward returned "
                                         f"{type(res).__name__}, expected {len(outs)} outputs")
                    for s, v in zip(outs, res):
                        vals[s] = v
        except (TypeError, ValueError, RuntimeError) as e:
            raise _prefixed(e, f"Graph[{P.nodes[k]}]") from None
        outs = tuple(vals[s] for s in P.out_slots)
        if training:
            P.out_meta = [(o.shape, o.dtype) if isinstance(o, np.ndarray) else None
                          for o in outs]
            P.in_meta = [(x.shape, x.dtype) for x in xs]
            object.__setattr__(self, "_ran", P)
        else:
            object.__setattr__(self, "_ran", None)
        return outs[0] if len(outs) == 1 else outs

    def _owns(self, x):
        P = self._plan
        if P is None:
            return False
        view = x.base is not None

        def mine(b):
            return b is x or (view and _may_share(b, x))

        for b in P.gbufs.values():
            if mine(b):
                return True
        for st in P.steps:
            for b in st.ctx.bufs.values():
                if mine(b):
                    return True
            if type(st) is _ModStep:
                m = st.m
                if isinstance(m, Graph) and m._owns(x):
                    return True
                if isinstance(m, Sequential) and m._plan is not None and \
                        Sequential._owns(x, m._plan):
                    return True
                if any(mine(b) for b in m._ctx.bufs.values()):
                    return True
        return False

    def backward(self, grad_out, input_grad=True):
        """Backpropagate ``grad_out`` (one gradient per output: an array, or a tuple/list in
        output order; None for an output without one).  Adds into the parameters' gradients
        and returns {input name: gradient} (None when input_grad is False)."""
        P = self._ran
        if P is None or P is not self._plan:
            raise RuntimeError("Graph: backward() called before a training-mode forward(); an "
                               "eval-mode forward keeps nothing for backward (call .train() "
                               "first)")
        nout = len(P.out_slots)
        if isinstance(grad_out, (tuple, list)):
            gouts = list(grad_out)
        elif nout == 1:
            gouts = [grad_out]
        else:
            raise TypeError(f"Graph.backward: the graph has {nout} outputs; pass a tuple or "
                            f"list of {nout} gradients (in output order), got "
                            f"{type(grad_out).__name__}")
        if len(gouts) != nout:
            raise ValueError(f"Graph.backward: the graph has {nout} output"
                             f"{'s' * (nout != 1)}, got {len(gouts)} gradients")
        for k, (g, meta) in enumerate(zip(gouts, P.out_meta)):
            if g is None:
                continue
            what = f"Graph.backward: the gradient of output {k} ({self._label(self._outputs[k])})"
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{what} must be a numpy.ndarray, got {type(g).__name__}")
            if meta is not None and g.shape != meta[0]:
                raise ValueError(f"{what} has shape {g.shape}, expected {meta[0]} (the "
                                 "output's shape)")
            if meta is not None and g.dtype != meta[1]:
                raise TypeError(f"{what} has dtype {g.dtype}, the output has {meta[1]}")
        ig = bool(input_grad)
        needs, want, skip = P.needs[ig], P.want[ig], P.skip[ig]
        acc = [None] * P.nslots
        for s, g in zip(P.out_slots, gouts):
            if g is not None and needs[s]:
                self._accumulate(P, acc, s, g)
        k = len(P.steps) - 1
        try:
            while k >= 0:
                outs = P.outs[k]
                if not skip[k]:
                    gs = [acc[s] for s in outs]
                    if any(g is not None for g in gs):
                        st = P.steps[k]
                        res = st.backward(gs[0] if len(gs) == 1 else gs, want[k])
                        if want[k]:
                            for s, g in zip(P.ins[k], res):
                                if g is not None and needs[s]:
                                    self._accumulate(P, acc, s, g)
                k -= 1
        except (TypeError, ValueError, RuntimeError) as e:
            raise _prefixed(e, f"Graph[{P.nodes[k]}]") from None
        if not ig:
            return None
        grads = {}
        for (name, s), (shape, dt) in zip(zip(self._input_ids, P.in_slots), P.in_meta):
            g = acc[s]
            if g is None:      # no output depends on this input
                g = P.zbufs.get(s)
                if g is None or g.shape != shape or g.dtype != dt:
                    g = np.zeros(shape, dt)
                    P.zbufs[s] = g
                else:
                    g.fill(0)
            grads[name] = g
        return grads

    @staticmethod
    def _accumulate(P, acc, s, g):
        """Add a gradient contribution to value slot s.  The first contribution is kept by
        reference; from the second on they are summed into the graph's own buffer for s, in
        the order they arrive (reverse topological order: deterministic).  Contributions
        are never written to."""
        cur = acc[s]
        if cur is None:
            acc[s] = g
            return
        if g.shape != cur.shape:
            raise ValueError(f"gradients of shapes {cur.shape} and {g.shape} reach one value")
        b = P.gbufs.get(s)
        if b is None or b.shape != cur.shape or b.dtype != cur.dtype:
            b = np.empty(cur.shape, cur.dtype)
            P.gbufs[s] = b
        np.add(cur, g, out=b, casting="no")
        acc[s] = b

    def _clear_state(self):
        super()._clear_state()
        if self._plan is not None:
            for st in self._plan.steps:
                st.ctx.clear()
        object.__setattr__(self, "_ran", None)

    # -- architecture (fastnn.save / fastnn.load)
    def _config(self):
        return {}

    def _arch(self):
        """{"type": "Graph", "modules": [each distinct module once], "nodes": [{"input":
        name[, "features": n]} or {"module": index into modules, "inputs": [[node, port],
        ...]}], "outputs": [[node, port], ...]}: a module used at several nodes is listed
        once, so the loaded graph shares it again."""
        mods, index, nodes = [], {}, []
        for r in self._recs:
            if r.module is None:
                nd = {"input": r.name}
                if r.feats[0] is not None:
                    nd["features"] = r.feats[0]
            else:
                k = index.get(id(r.module))
                if k is None:
                    k = index[id(r.module)] = len(mods)
                    mods.append(r.module._arch())
                nd = {"module": k, "inputs": [[j, p] for j, p in r.inputs]}
            nodes.append(nd)
        return {"type": "Graph", "config": {}, "modules": mods, "nodes": nodes,
                "outputs": [[j, p] for j, p in self._outputs]}

    @classmethod
    def _from_arch(cls, rec, build, where):
        """Rebuild from an _arch record (build(record, where) builds a child module).
        Raises ValueError/TypeError on an inconsistent record (including a cycle)."""
        mods = rec.get("modules")
        nodes = rec.get("nodes")
        outs = rec.get("outputs")
        if not isinstance(mods, list) or not isinstance(nodes, list) or \
                not isinstance(outs, list):
            raise ValueError(f"bad Graph record at {where} (needs modules, nodes and outputs)")
        built = [build(m, f"{where}.modules[{k}]") for k, m in enumerate(mods)]

        def ref(r):
            if not (isinstance(r, list) and len(r) == 2 and
                    all(isinstance(v, int) and not isinstance(v, bool) for v in r)):
                raise ValueError(f"bad edge {r!r} at {where}")
            return (r[0], r[1])

        g = cls()
        for i, nd in enumerate(nodes):
            if not isinstance(nd, dict):
                raise ValueError(f"bad node {i} at {where}")
            if "input" in nd:
                g.input(nd["input"], features=nd.get("features"))
            else:
                k = nd.get("module")
                if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(built) \
                        or not isinstance(nd.get("inputs"), list):
                    raise ValueError(f"bad node {i} at {where}")
                g._append("Graph", built[k], [ref(r) for r in nd["inputs"]])
        g._outputs.extend(ref(r) for r in outs)
        g._build_plan()          # checks every edge and that there is no cycle
        return g

    # -- printing
    def __repr__(self):
        lines = [f"  inputs: {', '.join(self._input_ids) or '(none)'}"]
        for i, r in enumerate(self._recs):
            if r.module is not None:
                sub = repr(r.module).replace("\n", "\n  ")
                src = ", ".join(self._short(ref) if ref[0] < len(self._recs) else "?"
                                for ref in r.inputs)
                lines.append(f"  ({i}): {sub} <- {src}")
        lines.append("  outputs: " + (", ".join(self._short(ref) for ref in self._outputs)
                                      or "(none)"))
        return "Graph(\n" + "\n".join(lines) + "\n)"


def _n_inputs(m):
    if isinstance(m, Graph):
        return len(m._input_ids)
    if isinstance(m, (Linear, _Activation, Sequential, Split)):
        return 1
    if isinstance(m, _Gate):
        return m._arity
    return None


def _n_outputs(who, m):
    if isinstance(m, Graph):
        if not m._outputs:
            raise ValueError(f"{who}: the nested Graph has no outputs yet; call output() on it "
                             "before adding it")
        return len(m._outputs)
    if isinstance(m, _Gate):
        return m._n_outputs()
    return 1
