"""Trainer callbacks: ``Callback`` (the hooks) and ``EarlyStopping``."""

__all__ = ["Callback", "EarlyStopping"]


class Callback:
    """Base class of Trainer callbacks; override any of the hooks.  Setting
    ``trainer.stop_training = True`` ends ``fit`` after the current epoch."""

    def on_train_begin(self, trainer):
        pass

    def on_epoch_end(self, trainer, epoch, logs):
        pass

    def on_train_end(self, trainer):
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a key of the epoch logs, e.g. "val_loss", "val_accuracy",
    "loss") has not improved by more than ``min_delta`` for ``patience`` epochs.  ``mode``
    "min", "max" or "auto" (max for accuracies, min otherwise).  With
    ``restore_best_weights`` the model gets the parameters of its best epoch back when
    training ends.  After fit: ``best``, ``best_epoch``, ``stopped_epoch`` (None if it ran
    to the end)."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
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

    def on_train_begin(self, trainer):
        self.best = self.best_epoch = self.stopped_epoch = None
        self._wait = 0
        self._state = None

    def on_epoch_end(self, trainer, epoch, logs):
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

    def on_train_end(self, trainer):
        if self.restore_best_weights and self._state is not None:
            trainer.model.load_state_dict(self._state)
        self._state = None


