"""Parameters and modules: a PyTorch-like API with an explicit backward pass.

Every module has ``forward(x)`` (also ``module(x)``) and ``backward(grad_out)``, which takes
the gradient of the loss w.r.t. the module's output, adds the gradients of its parameters
into ``p.grad`` and returns the gradient w.r.t. its input -- the forward/backward API of a
gate in a computational graph.  Gradients accumulate across backward calls until
``zero_grad()``.

Memory: in training mode a module keeps what its backward needs (a reference to its input
and/or its output) and writes its output and its input gradient into buffers it owns and
reuses while the batch shape repeats, so a steady-state training step allocates nothing.
The array ``forward`` returns in training mode is therefore overwritten by the module's next
forward (``.copy()`` it to keep it), and the input must not be modified before backward.
An eval-mode forward keeps nothing and returns a fresh array.
"""
import math
from collections import OrderedDict, namedtuple

import numpy as np

from .ops import ACTIVATIONS, DTYPES, _EMPTY, _may_share, _rowmajor, specialized
from ._kernels import dense as _dense

__all__ = ["Parameter", "Module", "Linear", "Sigmoid", "ReLU", "Tanh", "LeakyReLU",
           "Identity", "Sequential"]

_F32 = DTYPES[0]
_EMPTY2 = {dt: e2 for dt, (e2, _) in _EMPTY.items()}     # "no array" for the kernels
_EMPTY1 = {dt: e1 for dt, (_, e1) in _EMPTY.items()}
_INT_MAX = 2**31 - 1


_LIN_FWD = specialized(_dense._linear_forward)
_LIN_BWD = specialized(_dense._linear_backward)
_ACT_FWD = specialized(_dense._activation_forward)
_ACT_BWD = specialized(_dense._activation_backward)

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _float_dtype(who, dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in DTYPES:
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dt}")
    return dt


# --------------------------------------------------------------------------- Parameter
class Parameter:
    """A trainable array: ``data`` (C-contiguous float32/float64) and ``grad`` (same shape
    and dtype, always an array; zero until a backward pass adds into it).

    ``p.data = a`` and ``p.grad = a`` copy ``a`` into the existing arrays (same shape
    required), so optimizers and compiled steps that hold the arrays stay valid.
    """
    __slots__ = ("_data", "_grad", "_stale", "_flat", "_gflat", "__weakref__")

    def __init__(self, data):
        data = np.asarray(data)
        if data.dtype not in DTYPES:
            raise TypeError(f"Parameter: data must have dtype float32 or float64, got "
                            f"{data.dtype}")
        self._set_arrays(np.array(data, order="C", copy=True))

    def _set_arrays(self, data):
        self._data = data
        self._grad = np.empty_like(data)
        self._stale = True      # grad holds stale values that are logically zero
        self._flat = data.reshape(-1)           # 1-D views for the optimizer kernels
        self._gflat = self._grad.reshape(-1)

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        value = np.asarray(value)
        if value.shape != self._data.shape:
            raise ValueError(f"Parameter: cannot assign data of shape {value.shape} to a "
                             f"parameter of shape {self._data.shape}")
        if value.dtype not in DTYPES:
            raise TypeError(f"Parameter: data must have dtype float32 or float64, got "
                            f"{value.dtype}")
        np.copyto(self._data, value, casting="same_kind")

    @property
    def grad(self):
        if self._stale:
            self._grad.fill(0)
            self._stale = False
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is None:
            self._stale = True
            return
        value = np.asarray(value)
        if value.shape != self._data.shape:
            raise ValueError(f"Parameter: cannot assign a gradient of shape {value.shape} to "
                             f"a parameter of shape {self._data.shape}")
        np.copyto(self._grad, value, casting="same_kind")
        self._stale = False

    def zero_grad(self):
        """Make the gradient zero (in O(1): the next backward overwrites it)."""
        self._stale = True

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def size(self):
        return self._data.size

    @property
    def ndim(self):
        return self._data.ndim

    def numpy(self):
        return self._data

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and np.dtype(dtype) != self._data.dtype:
            if copy is False:
                raise ValueError(f"Parameter: converting {self._data.dtype} to "
                                 f"{np.dtype(dtype)} needs a copy (copy=False given)")
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def __repr__(self):
        return f"Parameter(shape={self._data.shape}, dtype={self._data.dtype})"

    def _convert(self, dtype):
        self._set_arrays(self._data.astype(dtype, order="C"))


# ----------------------------------------------------------------------- buffers, checks
class _Ctx:
    """What a module keeps between forward and backward, plus its reusable buffers."""
    __slots__ = ("x", "y", "shape", "bufs")

    def __init__(self):
        self.x = None
        self.y = None
        self.shape = None
        self.bufs = {}

    def clear(self):
        self.x = self.y = self.shape = None


def _buf(ctx, key, shape, dtype, avoid):
    """The step's reusable output buffer `key` of this shape and dtype, replaced by a new
    one when it does not fit or when it shares memory with the input `avoid` (the buffers
    own their memory, so an array that also owns its memory overlaps one only if it is it)."""
    a = ctx.bufs.get(key)
    if a is None or a.shape != shape or a.dtype != dtype or a is avoid or \
            (avoid.base is not None and avoid.size and _may_share(a, avoid)):
        a = np.empty(shape, dtype)
        ctx.bufs[key] = a
    return a


def _check_array(who, what, a, dtype=None):
    """A float32/float64 ndarray with element-aligned strides (copied if not).  `who` names
    the module in errors: a string, or a callable returning one (only called on error)."""
    if not isinstance(a, np.ndarray) or (dtype is not None and a.dtype != dtype) or \
            a.dtype not in DTYPES:
        _array_error(_name(who), what, a, dtype)
    isz = a.itemsize
    for s in a.strides:
        if s % isz:
            return a.copy()
    if not a.flags.aligned:
        return a.copy()
    return a


def _name(who):
    return who() if callable(who) else who


def _array_error(who, what, a, dtype):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{who}: {what} must be a numpy.ndarray, got {type(a).__name__}")
    dt = a.dtype
    if dtype is not None:
        if dt != dtype:
            if dt in DTYPES:
                raise TypeError(
                    f"{who}: {what} has dtype {dt} but the module computes in {dtype}; "
                    f"convert the {what} with .astype(np.{dtype}) or the model with "
                    f".to(np.{dt})")
            raise TypeError(f"{who}: {what} must have dtype {dtype}, got {dt}")
    raise TypeError(f"{who}: {what} must have dtype float32 or float64, got {dt}")


# ------------------------------------------------------------------------------ Module
_ARCH_TYPES = {}
# Bumped whenever any module (un)registers a parameter or submodule: cached parameter lists
# compare against it.
_structure_version = [0]


class Module:
    """Base class of every layer and container.

    Subclasses call ``super().__init__()`` first, assign Parameters and sub-Modules as
    attributes (they are registered in assignment order), and implement ``forward(x)`` and
    ``backward(grad_out, input_grad=True)``.  ``backward`` returns the gradient w.r.t. the
    input, or None when ``input_grad`` is False (the first layer of a network never needs
    it, and skipping it saves a matrix product).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_ctx", _Ctx())

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # fastnn.load rebuilds only fastnn's own module types
        if cls.__module__.split(".")[0] == "fastnn":
            _ARCH_TYPES.setdefault(cls.__name__, cls)

    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 "assigning attributes")
        params, mods = d["_parameters"], d["_modules"]
        if name in params or name in mods or isinstance(value, (Parameter, Module)):
            _structure_version[0] += 1
        if isinstance(value, Parameter):
            mods.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            mods[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"{type(self).__name__}: cannot assign {type(value).__name__} "
                                f"to parameter {name!r} (use a Parameter or None)")
            params[name] = None
        elif name in mods:
            if value is not None:
                raise TypeError(f"{type(self).__name__}: cannot assign {type(value).__name__} "
                                f"to submodule {name!r} (use a Module or None)")
            mods[name] = None
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # only reached when normal lookup fails
        if name in ("_parameters", "_modules", "_ctx", "training"):
            raise AttributeError(f"{type(self).__name__}: call super().__init__() at the "
                                 f"start of __init__ (missing {name!r})")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        _structure_version[0] += 1
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    # -- computation
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_out, input_grad=True):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    def _who(self):
        return repr(self) if not self._modules else f"{type(self).__name__}"

    # -- traversal
    def named_parameters(self, prefix="", recurse=True):
        """(name, Parameter) pairs, e.g. ("0.weight", p); each parameter once."""
        seen = set()
        for mname, m in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix=""):
        """(name, module) for this module and every descendant, each module once."""
        seen = set()
        stack = [(prefix, self)]
        out = []
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            out.append((name, m))
            kids = [(f"{name}.{n}" if name else n, c) for n, c in m.named_children()]
            stack.extend(reversed(kids))
        return iter(out)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    # -- modes and gradients
    def train(self, mode=True):
        """Training mode (forward keeps what backward needs); returns self."""
        mode = bool(mode)
        for m in self.modules():
            object.__setattr__(m, "training", mode)
            if not mode:
                m._clear_state()
        return self

    def eval(self):
        """Evaluation mode: forward keeps nothing and returns fresh arrays; returns self."""
        return self.train(False)

    def _clear_state(self):
        self._ctx.clear()

    def _param_list(self):
        """parameters() as a list, cached until the module structure changes."""
        cache = self.__dict__.get("_pcache")
        if cache is None or cache[0] != _structure_version[0]:
            cache = (_structure_version[0], list(self.parameters()))
            object.__setattr__(self, "_pcache", cache)
        return cache[1]

    def zero_grad(self):
        """Set every parameter's gradient to zero."""
        for p in self._param_list():
            p._stale = True

    # -- dtype
    @property
    def dtype(self):
        """The dtype of the parameters (None for a module without any)."""
        for p in self.parameters():
            return p.dtype
        return None

    def to(self, dtype):
        """Convert every parameter to float32 or float64 in place; returns self.  Gradients
        are reset to zero and saved state is dropped (create optimizers afterwards)."""
        dt = _float_dtype(f"{type(self).__name__}.to", dtype)
        for m in self.modules():
            m._clear_state()
            m._ctx.bufs.clear()
            if hasattr(m, "_plan"):
                object.__setattr__(m, "_plan", None)
        for p in self.parameters():
            if p.dtype != dt:
                p._convert(dt)
            else:
                p.zero_grad()
        return self

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    # -- state
    def state_dict(self):
        """An OrderedDict name -> copy of the parameter's data."""
        return OrderedDict((n, p.data.copy()) for n, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters.  Every shape and dtype is checked before
        anything is written, so a failed load leaves the module unchanged.  With strict, the
        keys must match exactly.  Returns (missing_keys, unexpected_keys)."""
        who = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"{who}: expected a mapping name -> array, got "
                            f"{type(state_dict).__name__}")
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"{who}: missing keys {missing}, unexpected keys {unexpected}")
        pending = []
        for name, p in own.items():
            if name not in state_dict:
                continue
            v = state_dict[name]
            if isinstance(v, Parameter):
                v = v.data
            if not isinstance(v, np.ndarray):
                raise TypeError(f"{who}: {name!r} must be a numpy.ndarray, got "
                                f"{type(v).__name__}")
            if v.shape != p.shape:
                raise ValueError(f"{who}: {name!r} has shape {v.shape}, the parameter has "
                                 f"{p.shape}")
            if v.dtype != p.dtype:
                raise TypeError(f"{who}: {name!r} has dtype {v.dtype}, the parameter has "
                                f"{p.dtype} (convert the model with .to() first)")
            pending.append((p, v))
        for p, v in pending:
            np.copyto(p._data, v)
        return IncompatibleKeys(missing, unexpected)

    # -- architecture (fastnn.save / fastnn.load)
    def _config(self):
        """Constructor keyword arguments (JSON values) that rebuild this module, or None
        when it cannot be rebuilt from a record."""
        return None

    def _arch(self):
        cfg = self._config()
        if cfg is None or _ARCH_TYPES.get(type(self).__name__) is not type(self):
            raise TypeError(f"fastnn.save: {type(self).__name__} cannot be saved with its "
                            "architecture (only fastnn's own modules can); save "
                            "model.state_dict() with numpy.savez instead")
        return {"type": type(self).__name__, "config": cfg}

    # -- printing
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, m in self.named_children():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


# ------------------------------------------------------------------------------ Linear
class Linear(Module):
    """y = x @ weight.T + bias, for x of shape (batch, in_features).

    weight: (out_features, in_features); bias: (out_features,).  Both are initialised
    from U(-1/sqrt(in_features), 1/sqrt(in_features)) as in PyTorch, drawn from ``rng`` (a
    numpy Generator, an int seed, or None for fresh entropy) in float64 and rounded to
    ``dtype``.
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, rng=None):
        super().__init__()
        for nm, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 \
                    or v > _INT_MAX:
                raise ValueError(f"Linear: {nm} must be an int in [1, 2**31-1], got {v!r}")
        dt = _float_dtype("Linear", dtype)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        rng = np.random.default_rng(rng)
        bound = 1.0 / np.sqrt(self.in_features)
        self.weight = Parameter(rng.uniform(-bound, bound,
                                            (self.out_features, self.in_features)).astype(dt))
        if bias:
            self.bias = Parameter(rng.uniform(-bound, bound, self.out_features).astype(dt))
        else:
            self.bias = None

    def extra_repr(self):
        s = (f"in_features={self.in_features}, out_features={self.out_features}, "
             f"bias={self.bias is not None}")
        if self.weight.dtype != _F32:
            s += f", dtype={self.weight.dtype}"
        return s

    def _config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "dtype": str(self.weight.dtype)}

    def _who(self):
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"

    def _check_input(self, x, trusted=False):
        # trusted: x is an array fastnn's own code produced (its layout is right; its dtype
        # is the previous layer's, which a model mixing dtypes may not share)
        if not trusted or x.dtype != self.weight._data.dtype:
            x = _check_array(self._who, "input", x, self.weight._data.dtype)
        if x.ndim != 2:
            raise ValueError(f"{self._who()}: input must be 2-D (batch, {self.in_features}), "
                             f"got {x.ndim}-D with shape {x.shape}")
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self._who()}: input has {x.shape[1]} features, expected "
                             f"{self.in_features} (input shape {x.shape}, expected "
                             f"(batch, {self.in_features}))")
        if x.shape[0] > _INT_MAX:
            raise ValueError(f"{self._who()}: batch exceeds 2**31-1")
        return x

    # The fused paths: Sequential calls these with an activation code (0 = identity).
    def _forward_act(self, ctx, x, act, slope, trusted=False):
        x = self._check_input(x, trusted)
        W = self.weight._data
        dt = W.dtype
        b = self.bias._data if self.bias is not None else _EMPTY1[dt]
        shape = (x.shape[0], self.out_features)
        if self.training:
            out = _buf(ctx, "out", shape, dt, x)
        else:
            out = np.empty(shape, dt)
        _LIN_FWD[dt](x, W, b, act, slope, out)
        if self.training:
            ctx.x = x
            ctx.y = out
        return out

    def _backward_act(self, ctx, grad_out, act, slope, input_grad, who, trusted=False):
        x, y = ctx.x, ctx.y
        if x is None:
            raise RuntimeError(
                f"{_name(who)}: backward() called before a training-mode forward(); an eval-mode "
                "forward keeps nothing for backward (call .train() first)")
        W = self.weight._data
        dt = W.dtype
        shape = y.shape
        if not trusted:
            grad_out = _check_array(who, "grad_out", grad_out, dt)
        if grad_out.shape != shape:
            raise ValueError(f"{_name(who)}: grad_out must have the output's shape {shape}, got "
                             f"{grad_out.shape}")
        if not trusted:
            grad_out = _rowmajor(grad_out)
        wp, bp = self.weight, self.bias
        gW, acc = wp._grad, not wp._stale
        wp._stale = False
        if bp is not None:
            gb = bp._grad
            if bp._stale == acc:      # one of the two was zeroed on its own: materialize
                (wp if not acc else bp)._grad.fill(0)
                acc = True
            bp._stale = False
        else:
            gb = _EMPTY1[dt]
        if act:
            work = _buf(ctx, "work", shape, dt, grad_out)
        else:
            work = _EMPTY2[dt]
        if input_grad:
            gx = _buf(ctx, "gx", x.shape, dt, grad_out)
        else:
            gx = _EMPTY2[dt]
        _LIN_BWD[dt](grad_out, x, W, y if act else _EMPTY2[dt], act, slope, gx, gW,
                                gb, acc, work, bool(input_grad), self.bias is not None)
        return gx if input_grad else None

    def forward(self, x):
        return self._forward_act(self._ctx, x, 0, 0.0)

    def backward(self, grad_out, input_grad=True):
        return self._backward_act(self._ctx, grad_out, 0, 0.0, input_grad, self._who)


# ------------------------------------------------------------------------- activations
class _Activation(Module):
    """Elementwise activation over an array of any shape (float32 or float64)."""
    _name = "identity"

    @property
    def _code(self):
        return ACTIVATIONS[self._name]

    def _slope(self):
        return 0.0

    def _fusable(self):
        return True

    def _who(self):
        return repr(self)

    def forward(self, x):
        return self._fwd(self._ctx, x, self.training)

    def backward(self, grad_out, input_grad=True):
        return self._bwd(self._ctx, grad_out, input_grad, self._who)

    def _fwd(self, ctx, x, training):
        who = self._who
        x = _check_array(who, "input", x)
        if x.ndim == 0:
            raise ValueError(f"{who()}: input must have at least 1 dimension, got a 0-D array")
        x2 = _rowmajor(x.reshape(math.prod(x.shape[:-1]), x.shape[-1]) if x.ndim != 2
                          else x)
        if training:
            out = _buf(ctx, "out", x2.shape, x.dtype, x2)
        else:
            out = np.empty(x2.shape, x.dtype)
        _ACT_FWD[x.dtype](x2, out, self._code, self._slope())
        if training:
            ctx.x = None if self._fusable() else x2
            ctx.y = out
            ctx.shape = x.shape
        return out.reshape(x.shape) if x.ndim != 2 else out

    def _bwd(self, ctx, grad_out, input_grad, who):
        y = ctx.y
        if y is None:
            raise RuntimeError(
                f"{_name(who)}: backward() called before a training-mode forward(); an eval-mode "
                "forward keeps nothing for backward (call .train() first)")
        grad_out = _check_array(who, "grad_out", grad_out, y.dtype)
        if grad_out.shape != ctx.shape:
            raise ValueError(f"{_name(who)}: grad_out must have the output's shape {ctx.shape}, "
                             f"got {grad_out.shape}")
        if not input_grad:
            return None
        g2 = _rowmajor(grad_out.reshape(y.shape) if grad_out.ndim != 2 else grad_out)
        gi = _buf(ctx, "gi", y.shape, y.dtype, g2)
        if self._fusable():
            _ACT_BWD[y.dtype](g2, y, gi, self._code, self._slope())
        else:   # leaky_relu with a negative slope: the derivative needs the input's sign
            np.multiply(g2, np.where(ctx.x > 0, 1.0, self._slope()).astype(y.dtype), out=gi)
        return gi.reshape(ctx.shape) if len(ctx.shape) != 2 else gi

    def _config(self):
        return {}


class Identity(_Activation):
    """y = x (returns its input itself); backward returns grad_out."""
    _name = "identity"

    def _fwd(self, ctx, x, training):
        _check_array("Identity()", "input", x)
        if training:
            ctx.shape = x.shape
            ctx.y = x
        return x

    def _bwd(self, ctx, grad_out, input_grad, who):
        if ctx.y is None:
            raise RuntimeError(f"{_name(who)}: backward() called before a training-mode forward()")
        grad_out = _check_array(who, "grad_out", grad_out, ctx.y.dtype)
        if grad_out.shape != ctx.shape:
            raise ValueError(f"{_name(who)}: grad_out must have the output's shape {ctx.shape}, "
                             f"got {grad_out.shape}")
        return grad_out if input_grad else None


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)); backward uses the saved output: dy/dx = y (1 - y)."""
    _name = "sigmoid"


class ReLU(_Activation):
    """y = max(x, 0); the derivative at 0 is 0."""
    _name = "relu"


class Tanh(_Activation):
    """y = tanh(x); dy/dx = 1 - y**2 from the saved output."""
    _name = "tanh"


class LeakyReLU(_Activation):
    """y = x for x > 0, negative_slope * x otherwise (negative_slope is fixed at
    construction).  With negative_slope >= 0 the derivative is read from the output and the
    layer fuses into a preceding Linear; a negative slope keeps the input instead."""
    _name = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        try:
            s = float(negative_slope)
        except (TypeError, ValueError):
            raise TypeError(f"LeakyReLU: negative_slope must be a number, got "
                            f"{negative_slope!r}") from None
        if not np.isfinite(s):
            raise ValueError(f"LeakyReLU: negative_slope must be finite, got {s}")
        object.__setattr__(self, "_negative_slope", s)

    @property
    def negative_slope(self):
        return self._negative_slope

    def _slope(self):
        return self._negative_slope

    def _fusable(self):
        return self._negative_slope >= 0

    def extra_repr(self):
        return f"negative_slope={self._negative_slope}"

    def _config(self):
        return {"negative_slope": self._negative_slope}


# -------------------------------------------------------------------------- Sequential
class _LinearStep:
    """A Linear, fused with the activation that follows it when there is one: one kernel
    call each way.  The step owns its saved state, so a module may appear twice."""
    __slots__ = ("lin", "act", "index", "ctx", "code", "slope")

    def __init__(self, lin, act, index):
        self.lin, self.act, self.index = lin, act, index
        self.ctx = _Ctx()
        # fixed for the plan's lifetime (LeakyReLU's slope cannot change)
        self.code = act._code if act is not None else 0
        self.slope = act._slope() if act is not None else 0.0

    def forward(self, x, trusted):
        return self.lin._forward_act(self.ctx, x, self.code, self.slope, trusted)

    def backward(self, g, input_grad, trusted):
        return self.lin._backward_act(self.ctx, g, self.code, self.slope, input_grad,
                                      self._who, trusted)

    def _who(self):
        if self.act is None:
            return self.lin._who()
        return f"{self.lin._who()} + {self.act!r}"


class _ActStep:
    __slots__ = ("act", "index", "ctx")

    def __init__(self, act, index):
        self.act, self.index = act, index
        self.ctx = _Ctx()

    def forward(self, x, trusted):
        return self.act._fwd(self.ctx, x, self.act.training)

    def backward(self, g, input_grad, trusted):
        return self.act._bwd(self.ctx, g, input_grad, self.act._who)


class _ModuleStep:
    __slots__ = ("m", "index", "ctx")

    def __init__(self, m, index):
        self.m, self.index = m, index
        self.ctx = _Ctx()

    def forward(self, x, trusted):
        return self.m.forward(x)

    def backward(self, g, input_grad, trusted):
        return self.m.backward(g, input_grad=input_grad)


def _prefixed(exc, prefix):
    """The same exception type with the Sequential position prepended."""
    try:
        new = type(exc)(f"{prefix}: {exc}")
    except Exception:
        return exc
    return new


class Sequential(Module):
    """Modules applied in order: ``Sequential(Linear(784, 100), ReLU(), Linear(100, 10))``.

    Supports ``len``, iteration, indexing (an int gives the module, a slice a new Sequential
    sharing the modules) and ``append``.  Each Linear followed by a Sigmoid, ReLU, Tanh or
    LeakyReLU (negative_slope >= 0) runs as one fused kernel call in forward and in
    backward, with results bitwise identical to running the two modules one after the other.
    Backward returns the gradient w.r.t. the network's input (``input_grad=False`` skips it).
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: every element must be a fastnn Module, got "
                                f"{type(m).__name__} at position {name}")
            setattr(self, name, m)
        object.__setattr__(self, "_plan", None)
        object.__setattr__(self, "_ran", None)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if isinstance(value, Module):
            object.__setattr__(self, "_plan", None)

    # -- container protocol
    def _list(self):
        return [m for m in self._modules.values() if m is not None]

    def __len__(self):
        return len(self._list())

    def __iter__(self):
        return iter(self._list())

    def __getitem__(self, idx):
        mods = self._list()
        if isinstance(idx, slice):
            return Sequential(*mods[idx])
        try:
            return mods[idx]
        except TypeError:
            raise TypeError(f"Sequential indices must be integers or slices, got "
                            f"{type(idx).__name__}") from None
        except IndexError:
            raise IndexError(f"Sequential index {idx} out of range for {len(mods)} "
                             "modules") from None

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a fastnn Module, got "
                            f"{type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    # -- execution
    def _build_plan(self):
        mods = self._list()
        steps, i, seen = [], 0, set()
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if type(m) is Linear:
                if isinstance(nxt, _Activation) and type(nxt) is not Identity and \
                        nxt._fusable() and type(nxt)._fwd is _Activation._fwd:
                    steps.append(_LinearStep(m, nxt, i))
                    i += 2
                    continue
                steps.append(_LinearStep(m, None, i))
            elif isinstance(m, _Activation):
                steps.append(_ActStep(m, i))
            else:
                if id(m) in seen:
                    raise ValueError(
                        f"Sequential: {type(m).__name__} at position {i} appears twice; "
                        "only Linear and activation modules can be reused within one "
                        "Sequential")
                seen.add(id(m))
                steps.append(_ModuleStep(m, i))
            i += 1
        object.__setattr__(self, "_plan", steps)
        return steps

    def forward(self, x):
        steps = self._plan or self._build_plan()
        step = None
        if self.training and isinstance(x, np.ndarray) and x.size and self._owns(x, steps):
            # the input is one of our own output buffers (e.g. the last output fed back
            # in): a step that keeps its input for backward must not see it overwritten
            # later in this same forward
            x = x.copy()
        trusted = False
        try:
            for step in steps:
                x = step.forward(x, trusted)
                trusted = type(step) is _LinearStep     # its output is our own buffer
        except (TypeError, ValueError, RuntimeError) as e:
            raise _prefixed(e, f"Sequential[{step.index}]") from None
        object.__setattr__(self, "_ran", steps if self.training else None)
        return x

    @staticmethod
    def _owns(x, steps):
        view = x.base is not None
        for st in steps:
            b = st.ctx.bufs.get("out")
            if b is not None and (b is x or (view and _may_share(b, x))):
                return True
            if type(st) is _ModuleStep and isinstance(st.m, Sequential) and \
                    st.m._plan is not None and Sequential._owns(x, st.m._plan):
                return True
        return False

    def backward(self, grad_out, input_grad=True):
        steps = self._ran
        if steps is None or steps is not self._plan:
            raise RuntimeError("Sequential: backward() called before a training-mode "
                               "forward(); an eval-mode forward keeps nothing for backward "
                               "(call .train() first)")
        g = grad_out
        i = len(steps) - 1
        trusted = False
        try:
            while i >= 0:
                step = steps[i]
                g = step.backward(g, input_grad or i > 0, trusted)
                trusted = type(step) is _LinearStep     # g is its own gx buffer
                i -= 1
        except (TypeError, ValueError, RuntimeError) as e:
            raise _prefixed(e, f"Sequential[{steps[i].index}]") from None
        return g

    def _clear_state(self):
        super()._clear_state()
        if self._plan is not None:
            for s in self._plan:
                s.ctx.clear()
        object.__setattr__(self, "_ran", None)

    def _config(self):
        return {}

    def _arch(self):
        names = [n for n, m in self._modules.items() if m is not None]
        rec = {"type": "Sequential", "config": {},
               "children": [m._arch() for m in self._list()]}
        if names != [str(i) for i in range(len(names))]:
            rec["names"] = names
        return rec
