"""fastnn.onnx: export a fastnn model to an ONNX file, and load such a file back.

    fastnn.onnx.export(model, "model.onnx")          # Sequential or Graph, float32/float64
    sess = onnxruntime.InferenceSession("model.onnx")
    model2 = fastnn.onnx.load("model.onnx")          # bitwise equal outputs

Each module becomes the standard operator: Linear -> Gemm(transB=1) (its bias as C),
Sigmoid / ReLU / Tanh / LeakyReLU(alpha) / Identity -> the operator of that name (Dropout,
the identity in eval mode, is left out), the gates
Add / Multiply / Maximum / Concat / Split -> Add / Mul / Max / Concat / Split (axis 1);
GELU -> Gelu (opset >= 20; earlier opsets: 0.5 x (1 + Erf(x / sqrt 2)), or the Tanh form for
approximate="tanh"), SiLU -> x * Sigmoid(x), ELU -> Elu(alpha), Softplus -> Softplus
(Softplus(beta x) / beta for beta != 1; ONNX's Softplus has no threshold, so above torch's
threshold the exported value is x + log1p(exp(-beta x)) / beta instead of x: a relative
difference below exp(-20)), Softmax / LogSoftmax -> Softmax / LogSoftmax (axis 1);
nested containers are inlined.  The parameters are the initializers (named as in
``model.named_parameters()``) and the model's architecture record (fastnn.io.record) is
stored in the file's metadata_props, so ``load`` rebuilds exactly the fastnn model.

Only the ``onnx`` package is used (``pip install fastnn[onnx]``); it is imported on first
use, so fastnn itself never needs it.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ._typing import PathLike

if TYPE_CHECKING:
    from .nn.module import Module

__all__ = ["export", "load"]

ARCH_KEY = "fastnn.arch"          # metadata_props: the architecture record (JSON)
PARAMS_KEY = "fastnn.parameters"  # metadata_props: the parameter names, in order (JSON)
FORMAT_KEY = "fastnn.format"
FORMAT = "fastnn-onnx/1"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("fastnn.onnx needs the onnx package: pip install fastnn[onnx] "
                          "(or pip install onnx)") from None
    return onnx


class _Emitter:
    """Collects the nodes of one ONNX graph; value names are unique."""

    def __init__(self, onnx, dtype, pnames, opset=17):
        self.onnx, self.dtype, self.pnames, self.opset = onnx, dtype, pnames, opset
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def node(self, op, ins, hint, n_out=1, **attrs):
        outs = [self.name(hint) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, ins, outs, name=self.name(op),
                                                     **attrs))
        return outs

    def const_int64(self, values, hint):
        nm = self.name(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(values, np.int64), nm))
        return nm

    def const(self, value, hint):
        nm = self.name(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, self.dtype), nm))
        return nm

    # -- modules
    def module(self, m, ins, feats, where):
        """Emit module m reading value names `ins` (known last-axis sizes `feats`);
        returns (output names, their sizes)."""
        from .nn import (ELU, GELU, Add, Concat, Dropout, Graph, Identity, LeakyReLU, Linear,
                         LogSoftmax, Maximum, Multiply, ReLU, Sequential, Sigmoid, SiLU,
                         Softmax, Softplus, Split, Tanh)
        t = type(m)
        if isinstance(m, Sequential):
            for k, c in enumerate(m):
                ins, feats = self.module(c, ins, feats, f"{where}[{k}]")
            return ins, feats
        if isinstance(m, Graph):
            return self.graph(m, ins, where)
        if t is Linear:
            gin = [ins[0], self.pnames[id(m.weight)]]
            if m.bias is not None:
                gin.append(self.pnames[id(m.bias)])
            return self.node("Gemm", gin, "linear", transB=1), [m.out_features]
        if t is Dropout:           # the identity in eval mode: no node
            return ins, feats
        if t in (Sigmoid, ReLU, Tanh, Identity):
            op = {Sigmoid: "Sigmoid", ReLU: "Relu", Tanh: "Tanh", Identity: "Identity"}[t]
            return self.node(op, ins, op.lower()), feats
        if t is LeakyReLU:
            a = float(m.negative_slope)
            if float(np.float32(a)) == a or self.dtype != np.float64:
                return self.node("LeakyRelu", ins, "leaky_relu", alpha=a), feats
            # the attribute alpha is a float32: a float64 slope it cannot hold exactly is
            # written as Where(x > 0, x, x * slope) with a float64 constant
            zero, slope = self.const(0.0, "zero"), self.const(a, "slope")
            pos = self.node("Greater", [ins[0], zero], "positive")
            neg = self.node("Mul", [ins[0], slope], "scaled")
            return self.node("Where", [pos[0], ins[0], neg[0]], "leaky_relu"), feats
        if t is GELU:
            return self.gelu(m, ins[0]), feats
        if t is SiLU:
            sig = self.node("Sigmoid", ins, "sigmoid")
            return self.node("Mul", [ins[0], sig[0]], "silu"), feats
        if t is ELU:
            a = float(m.alpha)
            if float(np.float32(a)) == a or self.dtype != np.float64:
                return self.node("Elu", ins, "elu", alpha=a), feats
            # a float64 alpha the float32 attribute cannot hold: Where(x > 0, x, a (e^x - 1))
            zero, one, alpha = self.const(0.0, "zero"), self.const(1.0, "one"), \
                self.const(a, "alpha")
            pos = self.node("Greater", [ins[0], zero], "positive")
            em1 = self.node("Sub", [self.node("Exp", ins, "exp")[0], one], "expm1")
            neg = self.node("Mul", [em1[0], alpha], "scaled")
            return self.node("Where", [pos[0], ins[0], neg[0]], "elu"), feats
        if t is Softplus:
            if m.beta == 1.0:
                return self.node("Softplus", ins, "softplus"), feats
            beta = self.const(m.beta, "beta")
            u = self.node("Mul", [ins[0], beta], "beta_x")
            sp = self.node("Softplus", u, "softplus")
            return self.node("Div", [sp[0], beta], "softplus"), feats
        if t in (Softmax, LogSoftmax):
            op = "Softmax" if t is Softmax else "LogSoftmax"
            return self.node(op, ins, op.lower(), axis=1), feats
        if t in (Add, Multiply, Maximum):
            op = {Add: "Add", Multiply: "Mul", Maximum: "Max"}[t]
            f = feats[0] if feats[0] is not None else feats[1]
            return self.node(op, ins, op.lower()), [f]
        if t is Concat:
            return (self.node("Concat", ins, "concat", axis=1),
                    [None if None in feats else sum(feats)])
        if t is Split:
            split = self.const_int64(list(m.sizes), "split_sizes")
            return (self.node("Split", [ins[0], split], "split", n_out=len(m.sizes), axis=1),
                    list(m.sizes))
        raise TypeError(f"fastnn.onnx.export: {t.__name__} at {where} has no ONNX form "
                        "(supported: Linear, Sigmoid, ReLU, Tanh, LeakyReLU, Identity, GELU, "
                        "SiLU, Softplus, ELU, Softmax, LogSoftmax, Dropout, Add, Multiply, Maximum, "
                        "Concat, Split, Sequential, Graph)")

    def gelu(self, m, x):
        """Gelu (opset 20) or its definition from Erf / Tanh."""
        if self.opset >= 20:
            return self.node("Gelu", [x], "gelu", approximate=m.approximate)
        half, one = self.const(0.5, "half"), self.const(1.0, "one")
        if m.approximate == "none":
            inner = self.node("Mul", [x, self.const(np.sqrt(0.5), "rsqrt2")], "scaled")
            t = self.node("Erf", inner, "erf")
        else:
            x3 = self.node("Mul", [x, self.node("Mul", [x, x], "x2")[0]], "x3")
            cub = self.node("Mul", [x3[0], self.const(0.044715, "c")], "cubic")
            inner = self.node("Mul", [self.node("Add", [x, cub[0]], "sum")[0],
                                      self.const(np.sqrt(2 / np.pi), "k")], "inner")
            t = self.node("Tanh", inner, "tanh")
        s = self.node("Add", [t[0], one], "plus_one")
        return self.node("Mul", [self.node("Mul", [x, half], "half_x")[0], s[0]], "gelu")

    def graph(self, g, ins, where):
        """A Graph's nodes in the planner's topological order (fastnn.nn.plan)."""
        from .nn.plan import LinearStep
        P = g._plan or g._build_plan()
        vals = [None] * P.nslots
        feats = [None] * P.nslots
        for s, nm, i in zip(P.in_slots, ins, g._input_ids.values()):
            vals[s], feats[s] = nm, g._recs[i].feats[0]
        for k, st in enumerate(P.steps):
            xin = [vals[s] for s in P.ins[k]]
            fin = [feats[s] for s in P.ins[k]]
            w = f"{where}[node {P.nodes[k]}]"
            if type(st) is LinearStep:
                outs, fo = self.module(st.lin, xin, fin, w)
                if st.act is not None:
                    outs, fo = self.module(st.act, outs, fo, w)
            else:
                outs, fo = self.module(st.module, xin, fin, w)
            for s, nm, f in zip(P.outs[k], outs, fo):
                vals[s], feats[s] = nm, f
        return [vals[s] for s in P.out_slots], [feats[s] for s in P.out_slots]


def _in_features(m):
    """The size of the last axis of m's input(s), where the model tells it."""
    from .nn import Dropout, Graph, Linear, Sequential
    from .nn.layers import _Activation
    if type(m) is Linear:
        return [m.in_features]
    if isinstance(m, Graph):
        return [m._recs[i].feats[0] for i in m._input_ids.values()]
    if isinstance(m, Sequential):
        for c in m:
            if isinstance(c, (_Activation, Dropout)):
                continue
            return _in_features(c)
    return [None]


def _model_dtype(model):
    dts = {p.data.dtype for p in model.parameters()}
    if len(dts) > 1:
        raise TypeError("fastnn.onnx.export: the model mixes parameter dtypes "
                        f"({', '.join(sorted(map(str, dts)))}); convert it with "
                        ".to(np.float32) or .to(np.float64) first")
    return np.dtype(dts.pop()) if dts else np.dtype(np.float32)


def export(model: Module, path: PathLike, *, opset: int = 17,
           batch_dim: str | int = "dynamic") -> Any:
    """Write ``model`` (a Sequential or Graph of fastnn modules, or one module) to the ONNX
    file ``path``.

    opset: the ONNX opset (13 or later: Split takes its sizes as an input).
    batch_dim: "dynamic" (the first axis is the symbolic "batch") or a fixed int batch size.
    The inputs are named as the Graph's inputs ("input" for other models), the outputs
    "output" (or "output0", "output1", ... for several).  Raises TypeError naming the first
    module without an ONNX form.  Returns the onnx.ModelProto (already checked with
    onnx.checker)."""
    onnx = _onnx()
    from . import io
    from .nn import Graph, Module
    if not isinstance(model, Module):
        raise TypeError(f"fastnn.onnx.export: expected a fastnn Module, got "
                        f"{type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ValueError(f"fastnn.onnx.export: opset must be an int >= 13, got {opset!r}")
    if batch_dim == "dynamic":
        bdim = "batch"
    elif isinstance(batch_dim, (int, np.integer)) and not isinstance(batch_dim, bool) \
            and batch_dim >= 1:
        bdim = int(batch_dim)
    else:
        raise ValueError(f"fastnn.onnx.export: batch_dim must be 'dynamic' or an int >= 1, "
                         f"got {batch_dim!r}")
    dtype = _model_dtype(model)
    io._check_unshared(model)
    named = list(model.named_parameters())
    pnames = {id(p): n for n, p in named}
    em = _Emitter(onnx, dtype, pnames, opset)
    if isinstance(model, Graph):
        in_names = list(model.input_names)
    else:
        in_names = ["input"]
    in_feats = _in_features(model)
    outs, out_feats = em.module(model, list(in_names), list(in_feats), "the root")
    arch = io.record(model)          # every module is fastnn's own by now
    # every output a distinct named value (an output may be an input or repeat)
    out_names = ["output"] if len(outs) == 1 else [f"output{k}" for k in range(len(outs))]
    for src, dst in zip(outs, out_names):
        em.nodes.append(onnx.helper.make_node("Identity", [src], [dst],
                                              name=em.name("output")))
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)

    def vi(nm, f, k):
        return onnx.helper.make_tensor_value_info(
            nm, elem, [bdim, f if f is not None else f"{nm}_features"])

    inits = [onnx.numpy_helper.from_array(np.ascontiguousarray(p.data), n) for n, p in named]
    graph = onnx.helper.make_graph(
        em.nodes, "fastnn", [vi(n, f, k) for k, (n, f) in enumerate(zip(in_names, in_feats))],
        [vi(n, f, k) for k, (n, f) in enumerate(zip(out_names, out_feats))],
        initializer=inits + em.inits)
    from . import __version__
    m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                               producer_name="fastnn", producer_version=__version__)
    onnx.helper.set_model_props(m, {FORMAT_KEY: FORMAT, ARCH_KEY: json.dumps(arch),
                                    PARAMS_KEY: json.dumps([n for n, _ in named])})
    onnx.checker.check_model(m, full_check=True)
    path = os.fspath(path)
    onnx.save_model(m, path)
    return m


def load(path: PathLike) -> Module:
    """Rebuild the fastnn model of an ONNX file written by fastnn.onnx.export (from the
    architecture record in its metadata and the initializers); bitwise equal outputs.
    Raises ValueError for a file fastnn did not write or cannot read."""
    onnx = _onnx()
    from . import io
    path = os.fspath(path)
    who = f"fastnn.onnx.load({path!r})"
    try:
        m = onnx.load_model(path)
    except FileNotFoundError:
        raise
    except Exception as e:      # protobuf's DecodeError and friends
        raise ValueError(f"{who}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    props = {p.key: p.value for p in m.metadata_props}
    if props.get(FORMAT_KEY) != FORMAT or ARCH_KEY not in props:
        raise ValueError(f"{who}: no fastnn architecture in the file's metadata (only files "
                         "written by fastnn.onnx.export can be loaded back)")
    with io._reading(who, "ONNX file"):
        arch = json.loads(props[ARCH_KEY])
        names = json.loads(props.get(PARAMS_KEY, "[]"))
        inits = {t.name: t for t in m.graph.initializer}
        missing = [n for n in names if n not in inits]
        if missing:
            raise io._LoadError(f"parameters {missing} are listed but missing")
        state = {n: onnx.numpy_helper.to_array(inits[n]) for n in names}
        model = io._build(arch)
    # an inference format: extra state (Dropout's step counter) starts afresh
    state.update(model._extra_states())
    try:
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{who}: the parameters do not fit the architecture: {e}") from None
    return model.train()
