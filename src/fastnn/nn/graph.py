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
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _checks as C
from .gates import Split
from .module import Module
from .plan import Container, Rec, infer_features, n_inputs, n_outputs, plan_graph, reusable

__all__ = ["Graph", "Node"]


class Node:
    """A value of a Graph: one of its inputs, or one output of a module added to it.  Only
    meaningful to the graph that returned it."""
    __slots__ = ("graph", "index", "port")

    def __init__(self, graph: Graph, index: int, port: int = 0) -> None:
        self.graph, self.index, self.port = graph, index, port

    def __repr__(self) -> str:
        return f"Node({self.graph._label((self.index, self.port))})"



class Graph(Container):
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

    def __init__(self) -> None:
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

    def input(self, name: str, features: int | None = None) -> Node:
        """Declare an input (called ``name`` in ``g(name=X)`` and in backward's dict).
        ``features`` (optional) is the size of its last axis: it is checked on every call
        and lets ``add`` check the shapes of the modules it feeds.

        Parameters
        ----------
        name : str
            The input's name (an identifier, unique in the graph).
        features : int, optional
            The size of its last axis.

        Returns
        -------
        Node
            The input's node.
        """
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
        self._recs.append(Rec(name, None, [], 1,
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

    def add(self, module: Module, *inputs: Node) -> Any:
        """Apply ``module`` to the values ``inputs`` (nodes); returns its output node (a
        tuple of nodes for a module with several outputs, such as Split).

        Parameters
        ----------
        module : Module
            The module to apply.
        *inputs : Node
            Its inputs (nodes of this graph).

        Returns
        -------
        Node or tuple of Node
            Its output(s).
        """
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
        n_out = n_outputs(who, module)
        n_in = n_inputs(module)
        if n_in is not None and len(refs) != n_in:
            raise TypeError(f"{who}: {module!r} takes {n_in} input{'s' * (n_in != 1)}, got "
                            f"{len(refs)}")
        first = self._mod_name.get(id(module))
        if first is not None and not reusable(module):
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
        self._recs.append(Rec(None, module, refs, n_out, feats))
        self._invalidate()
        return i

    def _infer(self, who, module, refs, n_out):
        """Sizes of the outputs' last axis where known, checking the module's inputs."""
        f = [self._recs[j].feats[p] if p < self._recs[j].n_out else None for j, p in refs]
        feats = infer_features(who, module, f, [self._label(r) for r in refs])
        return [None] * n_out if feats is None else feats

    def output(self, *nodes: Node) -> None:
        """Declare output(s), in order (each call appends).

        Parameters
        ----------
        *nodes : Node
            The outputs to declare.
        """
        if not nodes:
            raise TypeError("Graph.output: pass at least one node")
        refs = [self._ref("Graph.output", f"output {len(self._outputs) + k}", n)
                for k, n in enumerate(nodes)]
        self._outputs.extend(refs)
        self._invalidate()

    @property
    def input_names(self) -> list[str]:
        """The inputs' names, in declaration order."""
        return list(self._input_ids)

    @property
    def n_outputs(self) -> int:
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
        if not self._outputs:
            raise RuntimeError("Graph: the graph has no outputs; declare them with "
                               "g.output(node) before running it")
        P = plan_graph(self._recs, list(self._input_ids.values()), self._outputs, self._label)
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

    def forward(self, *args: Any, **kwargs: Any) -> Any:
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
                res = st.forward([vals[s] for s in P.ins[k]], False)
                outs = P.outs[k]
                if len(outs) == 1:
                    vals[outs[0]] = res
                else:
                    if not isinstance(res, (tuple, list)) or len(res) != len(outs):
                        raise ValueError(f"{type(st.module).__name__}: forward returned "
                                         f"{type(res).__name__}, expected {len(outs)} outputs")
                    for s, v in zip(outs, res):
                        vals[s] = v
        except (TypeError, ValueError, RuntimeError) as e:
            raise C.prefixed(e, f"Graph[{P.nodes[k]}]") from None
        outs = tuple(vals[s] for s in P.out_slots)
        if training:
            # what backward checks its gradients against
            object.__setattr__(self, "_meta", (
                [(o.shape, o.dtype) if isinstance(o, np.ndarray) else None for o in outs],
                [(x.shape, x.dtype) for x in xs]))
            object.__setattr__(self, "_ran", P)
        else:
            object.__setattr__(self, "_ran", None)
        return outs[0] if len(outs) == 1 else outs

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
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
        out_meta, in_meta = self._meta
        for k, (g, meta) in enumerate(zip(gouts, out_meta)):
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
        needs, want, skip = P.flow(ig)
        acc = [None] * P.nslots
        for s, g in zip(P.out_slots, gouts):
            if g is not None and needs[s]:
                self._accumulate(acc, s, g)
        k = len(P.steps) - 1
        try:
            while k >= 0:
                outs = P.outs[k]
                if not skip[k]:
                    gs = [acc[s] for s in outs]
                    if any(g is not None for g in gs):
                        st = P.steps[k]
                        res = st.backward(gs[0] if len(gs) == 1 else gs, want[k], False)
                        if want[k]:
                            for s, g in zip(P.ins[k], res):
                                if g is not None and needs[s]:
                                    self._accumulate(acc, s, g)
                k -= 1
        except (TypeError, ValueError, RuntimeError) as e:
            raise C.prefixed(e, f"Graph[{P.nodes[k]}]") from None
        if not ig:
            return None
        grads = {}
        for (name, s), (shape, dt) in zip(zip(self._input_ids, P.in_slots), in_meta):
            g = acc[s]
            if g is None:      # no output depends on this input
                bufs = self._ctx.bufs
                g = bufs.get(("zero", s))
                if g is None or g.shape != shape or g.dtype != dt:
                    g = bufs[("zero", s)] = np.zeros(shape, dt)
                else:
                    g.fill(0)
            grads[name] = g
        return grads

    def _accumulate(self, acc, s, g):
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
        bufs = self._ctx.bufs
        b = bufs.get(("sum", s))
        if b is None or b.shape != cur.shape or b.dtype != cur.dtype:
            b = bufs[("sum", s)] = np.empty(cur.shape, cur.dtype)
        np.add(cur, g, out=b, casting="no")
        acc[s] = b

    # -- printing
    def __repr__(self) -> str:
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


