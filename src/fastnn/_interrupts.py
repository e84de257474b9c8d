"""Updates that a KeyboardInterrupt cannot cut in half.

Python runs a signal's handler (for SIGINT: raise KeyboardInterrupt) between bytecodes of the
main thread, so an interrupt can land between two parameters' updates of one optimizer step.
``deferred()`` postpones it: inside the block a SIGINT (or ``_thread.interrupt_main()``) is
only recorded; when the block ends the original handler runs, so the KeyboardInterrupt is
raised after the update is complete -- or earlier, at a point the block chooses, by
calling ``check()`` (Trainer.fit defers for the whole run and checks after every step or
compiled chunk, so an interrupted fit leaves the parameters of the last completed step).
Signals reach the main thread only, so in any other thread (and when SIGINT has no Python
handler) the block runs as is.
"""
import signal
import threading

_main = threading.main_thread()


class deferred:
    """A with-block in which SIGINT is recorded, not handled (see the module docstring)."""
    __slots__ = ("_old", "_pending")

    def __init__(self):
        self._old = self._pending = None

    def __enter__(self):
        if threading.current_thread() is _main:
            old = signal.getsignal(signal.SIGINT)
            if callable(old):
                signal.signal(signal.SIGINT, self._record)
                self._old = old
        return self

    def _record(self, signum, frame):
        self._pending = (signum, frame)

    def check(self):
        """Raise the recorded interrupt now (the original handler runs), if there is one."""
        p = self._pending if self._old is not None else None
        if p is not None:
            self._pending = None
            self._old(*p)

    def __exit__(self, *exc):
        old, p = self._old, self._pending
        if old is not None:
            self._old = self._pending = None
            signal.signal(signal.SIGINT, old)
            if p is not None:
                old(*p)
        return False
