"""Training: the one-call compiled step, the Trainer, History and callbacks.

    compiled.py   compile_step / CompiledStep: a plan turned into one nogil kernel call
    trainer.py    Trainer (epochs through the compiled step), History
    callbacks.py  Callback, EarlyStopping, LRSchedulerCallback
"""
from .callbacks import Callback, EarlyStopping, LRSchedulerCallback
from .compiled import CompiledStep, compile_step
from .trainer import History, Trainer

__all__ = ["compile_step", "CompiledStep", "Trainer", "History", "Callback",
           "EarlyStopping", "LRSchedulerCallback"]
