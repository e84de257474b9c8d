"""Optimizers.  ``SGD`` follows torch.optim.SGD exactly; each parameter's update is one fused
kernel call.

``Optimizer`` is the contract between an optimizer and the kernels, used by ``step()`` and
by the compiled training step alike (fastnn.training.compiled never asks which optimizer
it runs):

``_kind``
    the update's code (``fastnn._kernels._core.OptKind``): ``optim.opt_update`` dispatches
    on it.
``_hyper``
    the hyperparameters as a tuple of floats in the kernel's order, kept current by the
    setters (read on every step).
``steps``
    updates applied so far (the next one is number ``steps + 1``).
``_prepare_state()``
    each parameter's state buffers for the next update -- created where missing by the one
    rule ``_state_for(i)`` -- as (list of tuples of arrays or None, list of "new" flags).
``_state_version``
    changes whenever a buffer is created, replaced or dropped, or the set of buffers an
    update uses changes (a caller holding pointers to them knows when to ask again).
``_drop_state(indices)``
    forget buffers created for an update that was not applied.
``_count_steps(n)``
    n updates were applied.

A new optimizer subclasses ``Optimizer``, sets ``_kind``, ``_hyper`` and ``_state_for``, and
adds its kernel to ``opt_update``; ``step()``, ``compile_step`` and the ``Trainer`` then run it.

Learning-rate schedules (torch's names and semantics) are in ``fastnn.optim.lr_scheduler``;
they read and set ``optimizer.lr``.
"""
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from . import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler"]
