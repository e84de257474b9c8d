"""Sequential: modules applied in order.  Its plan (one step per Linear+activation pair,
layer or opaque module) comes from fastnn.nn.plan; this file holds only container logic."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, overload

import numpy as np

from .. import _checks as C
from .module import Module
from .plan import Container, LinearStep, owns, plan_chain
from .._typing import Array, ArrayLike

__all__ = ["Sequential"]


class Sequential(Container):
    """Modules applied in order: ``Sequential(Linear(784, 100), ReLU(), Linear(100, 10))``.

    Supports ``len``, iteration, indexing (an int gives the module, a slice a new Sequential
    sharing the modules) and ``append``.  Each Linear followed by a Sigmoid, ReLU, Tanh or
    LeakyReLU (negative_slope >= 0) runs as one fused kernel call in forward and in
    backward, with results bitwise identical to running the two modules one after the other.
    Backward returns the gradient w.r.t. the network's input (``input_grad=False`` skips it).

    Parameters
    ----------
    *modules : Module, or one OrderedDict of name -> Module
        The modules, in order (named "0", "1", ... unless given names).
    """

    def __init__(self, *modules: Module | OrderedDict[str, Module]) -> None:
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

    def __len__(self) -> int:
        return len(self._list())

    def __iter__(self) -> Iterator[Module]:
        return iter(self._list())

    @overload
    def __getitem__(self, idx: int) -> Module: ...

    @overload
    def __getitem__(self, idx: slice) -> Sequential: ...

    def __getitem__(self, idx: int | slice) -> Module | Sequential:
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

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end.

        Parameters
        ----------
        module : Module
            The module to add at the end.

        Returns
        -------
        Sequential
            self.
        """
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a fastnn Module, got "
                            f"{type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    # -- execution
    def _build_plan(self):
        plan = plan_chain(self._list())
        object.__setattr__(self, "_plan", plan)
        return plan

    def forward(self, x: ArrayLike) -> Array:
        plan = self._plan or self._build_plan()
        steps = plan.steps
        step = None
        if self.training and isinstance(x, np.ndarray) and x.size and owns(steps, x):
            # the input is one of our own output buffers (e.g. the last output fed back
            # in): a step that keeps its input for backward must not see it overwritten
            # later in this same forward
            x = x.copy()
        trusted = False
        try:
            for step in steps:
                x = step.forward((x,), trusted)
                trusted = type(step) is LinearStep     # its output is our own buffer
        except (TypeError, ValueError, RuntimeError) as e:
            raise C.prefixed(e, f"Sequential[{step.index}]") from None
        object.__setattr__(self, "_ran", plan if self.training else None)
        return x

    def backward(self, grad_out: ArrayLike, input_grad: bool = True) -> Array | None:
        plan = self._ran
        if plan is None or plan is not self._plan:
            raise RuntimeError("Sequential: backward() called before a training-mode "
                               "forward(); an eval-mode forward keeps nothing for backward "
                               "(call .train() first)")
        steps = plan.steps
        g = grad_out
        i = len(steps) - 1
        trusted = False
        try:
            while i >= 0:
                step = steps[i]
                g = step.backward(g, input_grad or i > 0, trusted)[0]
                trusted = type(step) is LinearStep     # g is its own gx buffer
                i -= 1
        except (TypeError, ValueError, RuntimeError) as e:
            raise C.prefixed(e, f"Sequential[{steps[i].index}]") from None
        return g

    def _arch(self):
        return {}
