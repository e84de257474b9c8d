"""Module: the base class of every layer and container, with a PyTorch-like API and an
explicit backward pass.

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
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from .. import _checks as C
from .. import io as _io
from .parameter import Parameter

if TYPE_CHECKING:
    from typing_extensions import Self

    from .._typing import DTypeLike

__all__ = ["Module"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Ctx:
    """What one use of a module keeps between forward and backward, plus its reusable
    buffers."""
    __slots__ = ("x", "y", "shape", "bufs")

    def __init__(self):
        self.x = None
        self.y = None
        self.shape = None
        self.bufs = {}

    def clear(self):
        self.x = self.y = self.shape = None

    def owns(self, x):
        """Whether x is (a view of) one of these buffers."""
        view = x.base is not None
        for b in self.bufs.values():
            if b is x or (view and C.may_share(b, x)):
                return True
        return False


def buf(ctx, key, shape, dtype, *avoid):
    """The reusable output buffer `key` of this shape and dtype, replaced by a new one when
    it does not fit or when it shares memory with one of the arrays in `avoid` (the buffers
    own their memory, so an array that also owns its memory overlaps one only if it is it)."""
    a = ctx.bufs.get(key)
    if a is not None and a.shape == shape and a.dtype == dtype:
        for x in avoid:          # (inline: this runs for every output of every step)
            if a is x or (x.base is not None and x.size and C.may_share(a, x)):
                break
        else:
            return a
    a = ctx.bufs[key] = np.empty(shape, dtype)
    return a


def not_run(who):
    return RuntimeError(f"{C.name(who)}: backward() called before a training-mode forward(); "
                        "an eval-mode forward keeps nothing for backward (call .train() first)")


# ------------------------------------------------------------------------------ Module
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

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_ctx", Ctx())

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # fastnn.load rebuilds only fastnn's own module types
        if cls.__module__.split(".")[0] == "fastnn":
            _io.register(cls)

    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 "assigning attributes")
        params, mods = d["_parameters"], d["_modules"]
        bufs = d.get("_buffers")
        if bufs is not None and name in bufs:
            self._set_buffer(name, value)
            return
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

    # -- buffers: arrays that are state but not parameters (BatchNorm1d's running
    # statistics).  They go into state_dict() after the module's parameters (torch's keys
    # and order), load_state_dict() copies into them in place, fastnn.save and checkpoints
    # carry them, .to(dtype) converts the floating-point ones.  Assigning a new array to a
    # buffer attribute re-plans compiled steps (the structure version is bumped).
    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Register array ``value`` as buffer ``name``, also reachable as ``self.name``.

        Parameters
        ----------
        name : str
            An identifier not taken by a parameter or submodule.
        value : numpy.ndarray or None
            The buffer's array (None: an absent buffer, left out of ``state_dict``).
        """
        if not isinstance(name, str) or not name.isidentifier() or \
                name in self._parameters or name in self._modules:
            raise KeyError(f"{type(self).__name__}.register_buffer: bad or taken name "
                           f"{name!r}")
        self._buffers[name] = None
        self._set_buffer(name, value)

    def _set_buffer(self, name, value):
        if value is not None and not isinstance(value, np.ndarray):
            raise TypeError(f"{type(self).__name__}: buffer {name!r} must be a "
                            f"numpy.ndarray or None, got {type(value).__name__}")
        if self._buffers[name] is not value:
            _structure_version[0] += 1
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def named_buffers(self, prefix: str = "",
                      recurse: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) pairs of the buffers, e.g. ("1.running_mean", a); None skipped."""
        for mname, m in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for bname, b in m.__dict__.get("_buffers", {}).items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def _named_state(self):
        """(name, Parameter or buffer array) in torch's state_dict order: module by module,
        its parameters (each once) then its buffers."""
        seen = set()
        for mname, m in self.named_modules():
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p
            for bname, b in m.__dict__.get("_buffers", {}).items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

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
    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.forward(*inputs, **kwargs)

    def predict(self, *inputs: Any, **named: Any) -> Any:
        """The eval-mode output for ``inputs`` as a new array, through the model's cached
        compiled inference (fastnn.compile_inference: one nogil call for a Sequential or
        one-input Graph of fastnn layers; re-planned when the model changes; the module path
        otherwise), bitwise equal to ``model.eval()(x)``; the model's mode is unchanged."""
        f = self.__dict__.get("_inference")
        if f is None:
            from ..inference import InferenceFunction
            f = InferenceFunction(self, who=f"{type(self).__name__}.predict")
            object.__setattr__(self, "_inference", f)
        y = f(*inputs, **named)
        return y.copy() if isinstance(y, np.ndarray) else y

    def __getstate__(self):
        # the cached compiled inference points into this model's arrays: never copied
        d = self.__dict__.copy()
        d.pop("_inference", None)
        return d

    def _who(self):
        return repr(self) if not self._modules else f"{type(self).__name__}"

    # -- traversal
    def named_parameters(self, prefix: str = "",
                         recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) pairs, e.g. ("0.weight", p); each parameter once."""
        seen = set()
        for mname, m in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
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

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    # -- modes and gradients
    def train(self, mode: bool = True) -> Self:
        """Training mode (forward keeps what backward needs); returns self."""
        mode = bool(mode)
        for m in self.modules():
            object.__setattr__(m, "training", mode)
            if not mode:
                m._clear_state()
        return self

    def eval(self) -> Self:
        """Evaluation mode: forward keeps nothing and returns fresh arrays; returns self."""
        return self.train(False)

    def _clear_state(self):
        """Drop what forward kept for backward (eval mode)."""
        self._ctx.clear()

    def _reset(self):
        """Drop saved state, buffers and plans (the dtype or structure changed)."""
        self._clear_state()
        self._ctx.bufs.clear()

    def _owns(self, x):
        """Whether x is (a view of) a buffer this module or one of its parts writes: a
        container fed one of its own outputs must copy it first.  Containers answer for
        their steps."""
        return self._ctx.owns(x)

    def _param_list(self):
        """parameters() as a list, cached until the module structure changes."""
        cache = self.__dict__.get("_pcache")
        if cache is None or cache[0] != _structure_version[0]:
            cache = (_structure_version[0], list(self.parameters()))
            object.__setattr__(self, "_pcache", cache)
        return cache[1]

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero."""
        for p in self._param_list():
            p.zero_grad()

    # -- dtype
    @property
    def dtype(self) -> np.dtype[Any] | None:
        """The dtype of the parameters (None for a module without any)."""
        for p in self.parameters():
            return p.dtype
        return None

    def to(self, dtype: DTypeLike) -> Self:
        """Convert every parameter to float32 or float64 in place; returns self.  Gradients
        are reset to zero and saved state is dropped (create optimizers afterwards)."""
        dt = C.float_dtype(f"{type(self).__name__}.to", dtype)
        for m in self.modules():
            m._reset()
            m._convert_state(dt)
        for p in self.parameters():
            if p.dtype != dt:
                p._convert(dt)
            else:
                p.zero_grad()
        return self

    def _convert_state(self, dt):
        """.to(dt)'s hook for a module's own non-parameter state: converts the
        floating-point buffers (a subclass with more adds to it)."""
        for bname, b in list(self.__dict__.get("_buffers", {}).items()):
            if b is not None and b.dtype.kind == "f" and b.dtype != dt:
                self._set_buffer(bname, b.astype(dt))

    def float(self) -> Self:
        return self.to(np.float32)

    def double(self) -> Self:
        return self.to(np.float64)

    # -- state
    def state_dict(self) -> OrderedDict[str, Any]:
        """An OrderedDict name -> copy of each parameter's data and each buffer (torch's
        keys and order: module by module, parameters then buffers)."""
        return OrderedDict((n, (p.data if isinstance(p, Parameter) else p).copy())
                           for n, p in self._named_state())

    def load_state_dict(self, state_dict: Mapping[str, Any],
                        strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into the parameters.  Every shape and dtype is checked before
        anything is written, so a failed load leaves the module unchanged.  With strict, the
        keys must match exactly.  Returns (missing_keys, unexpected_keys)."""
        who = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"{who}: expected a mapping name -> array, got "
                            f"{type(state_dict).__name__}")
        own = OrderedDict(self._named_state())
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
            what = "parameter" if isinstance(p, Parameter) else "buffer"
            if v.shape != p.shape:
                raise ValueError(f"{who}: {name!r} has shape {v.shape}, the {what} has "
                                 f"{p.shape}")
            if v.dtype != p.dtype:
                raise TypeError(f"{who}: {name!r} has dtype {v.dtype}, the {what} has "
                                f"{p.dtype} (convert the model with .to() first)")
            pending.append((p, v))
        for p, v in pending:
            np.copyto(p._data if isinstance(p, Parameter) else p, v)
        return IncompatibleKeys(missing, unexpected)

    # -- architecture (fastnn.save / fastnn.load write and read the records: fastnn.io)
    def _arch(self):
        """Constructor keyword arguments (JSON values) that rebuild this module, or None
        when it cannot be rebuilt from a record."""
        return None

    # -- printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, m in self.named_children():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


