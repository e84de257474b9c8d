"""Trainer callbacks: ``Callback`` (the hooks), ``EarlyStopping`` and
``LRSchedulerCallback``."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .trainer import Trainer

from ..optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

__all__ = ["Callback", "EarlyStopping", "LRSchedulerCallback"]


class Callback:
    """Base class of Trainer callbacks; override any of the hooks.  Setting
    ``trainer.stop_training = True`` ends ``fit`` after the current epoch.

    ``on_batch_end(trainer, step)`` runs after every optimizer step (``step`` counts the
    epoch's steps from 1).  A callback that overrides it makes the Trainer run its compiled
    epochs one step per kernel call (each step then sees what the hook set, e.g. a new lr);
    without one, whole epochs run in one call.
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_batch_end(self, trainer: Trainer, step: int) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a key of the epoch logs, e.g. "val_loss", "val_accuracy",
    "loss") has not improved by more than ``min_delta`` for ``patience`` epochs.  ``mode``
    "min", "max" or "auto" (max for accuracies, min otherwise).  With
    ``restore_best_weights`` the model gets the parameters of its best epoch back when
    training ends.  After fit: ``best``, ``best_epoch``, ``stopped_epoch`` (None if it ran
    to the end).

    Parameters
    ----------
    monitor : str, optional
        The log key to watch.
    patience : int, optional
        Epochs without improvement before stopping.
    min_delta : float, optional
        The smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}, optional
        Whether smaller or larger is better.
    restore_best_weights : bool, optional
        Give the model its best epoch's parameters back at the end.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got "
                             f"{mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        min_delta = float(min_delta)
        if not min_delta >= 0:
            raise ValueError(f"EarlyStopping: min_delta must be >= 0, got {min_delta}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        self.best = self.best_epoch = self.stopped_epoch = None

    def on_train_begin(self, trainer: Trainer) -> None:
        self.best = self.best_epoch = self.stopped_epoch = None
        self._wait = 0
        self._state = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitored metric {self.monitor!r} is not in the "
                           f"epoch logs {sorted(logs)} (val_* metrics need validation_data)")
        v = float(logs[self.monitor])
        if self.best is None or (v < self.best - self.min_delta if self.mode == "min"
                                 else v > self.best + self.min_delta):
            self.best, self.best_epoch, self._wait = v, epoch, 0
            if self.restore_best_weights:
                self._state = trainer.model.state_dict()
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best_weights and self._state is not None:
            trainer.model.load_state_dict(self._state)
        self._state = None


def runs_per_batch(cb):
    """Whether the Trainer must call cb.on_batch_end after every step: it overrides the
    hook, in its class or on the instance."""
    hook = cb.on_batch_end
    return getattr(hook, "__func__", hook) is not Callback.on_batch_end


class LRSchedulerCallback(Callback):
    """Step a learning-rate schedule (``fastnn.optim.lr_scheduler``) during ``Trainer.fit``.

    ``interval="epoch"``: ``scheduler.step()`` after each epoch (after the epoch's logs are
    recorded); a ``ReduceLROnPlateau`` gets ``step(logs[monitor])``, ``monitor`` defaulting
    to "val_loss" when the logs have it, else "loss".  ``interval="step"``:
    ``scheduler.step()`` after every optimizer step (``OneCycleLR``, a per-step warm-up);
    the compiled epochs then run one step per kernel call, each reading the lr the
    schedule set, with results bitwise equal to the module path.  The scheduler must
    schedule the Trainer's optimizer.  History's "lr" is the lr of each epoch's first step.

    Parameters
    ----------
    scheduler : LRScheduler
        A schedule of the Trainer's optimizer.
    interval : {"epoch", "step"}, optional
        Step it after every epoch or after every optimizer step.
    monitor : str, optional
        The log key a ReduceLROnPlateau steps on.
    """

    def __init__(self, scheduler: LRScheduler, interval: str = "epoch",
                 monitor: str | None = None) -> None:
        who = "LRSchedulerCallback"
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"{who}: scheduler must be a fastnn.optim.lr_scheduler scheduler, "
                            f"got {type(scheduler).__name__}")
        if interval not in ("epoch", "step"):
            raise ValueError(f"{who}: interval must be 'epoch' or 'step', got {interval!r}")
        plateau = isinstance(scheduler, ReduceLROnPlateau)
        if plateau and interval == "step":
            raise ValueError(f"{who}: ReduceLROnPlateau steps on an epoch metric; use "
                             "interval='epoch'")
        if monitor is not None:
            if not plateau:
                raise ValueError(f"{who}: monitor is only used with ReduceLROnPlateau, got "
                                 f"monitor={monitor!r} for a {type(scheduler).__name__}")
            if not isinstance(monitor, str):
                raise TypeError(f"{who}: monitor must be a key of the epoch logs (a str), "
                                f"got {type(monitor).__name__}")
        self.scheduler, self.interval, self.monitor = scheduler, interval, monitor
        if interval == "step":
            # an instance hook: only a per-step schedule makes the Trainer run step by step
            self.on_batch_end = self._step

    def on_train_begin(self, trainer: Trainer) -> None:
        if self.scheduler.optimizer is not trainer.optimizer:
            raise ValueError("LRSchedulerCallback: the scheduler schedules another optimizer "
                             "than the Trainer's")

    def _step(self, trainer, step):
        self.scheduler.step()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.interval != "epoch":
            return
        if not isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step()
            return
        key = self.monitor
        if key is None:
            key = "val_loss" if "val_loss" in logs else "loss"
        if key not in logs:
            raise KeyError(f"LRSchedulerCallback: monitored metric {key!r} is not in the "
                           f"epoch logs {sorted(logs)} (val_* metrics need validation_data)")
        self.scheduler.step(logs[key])
