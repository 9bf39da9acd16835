"""For training code: save a checkpoint when smsupervise says the job is stopping.

Standard library only, and importing it does nothing else (it is safe in any interpreter that can
import ``smsupervise``; or copy this one file into your code)::

    from smsupervise import checkpoint

    stop = checkpoint.register(lambda: torch.save(state(), path))
    for batch in loader:
        train_step(batch)
        if stop.save_point():  # saves and acknowledges if a stop was asked for
            break

The protocol, for code that cannot import this module:

* smsupervise sets ``SMSUPERVISE_CHECKPOINT_SIGNAL`` (e.g. ``SIGUSR1``) and
  ``SMSUPERVISE_CHECKPOINT_DONE`` (a file path) in the training process's environment when it runs
  with ``--checkpoint-signal``. On a stop it sends that signal to the training process group,
  waits until the file exists (or ``--checkpoint-timeout``), then sends SIGTERM.
* Without ``--checkpoint-signal`` the first sign of a stop is SIGTERM itself, followed by SIGKILL
  after ``--grace-period``; the variables are not set.
* So: on the signal (``SMSUPERVISE_CHECKPOINT_SIGNAL``, else SIGTERM), finish the current step,
  save, then create the file named by ``SMSUPERVISE_CHECKPOINT_DONE`` (if set) to say the checkpoint
  is complete. Save atomically (write a temporary file, then ``os.replace``): a stop can always
  become a SIGKILL.

Saving happens at the next ``save_point()``, in the training loop, never inside the signal handler:
a handler runs between two bytecodes, possibly in the middle of an optimizer step, and would save
a state that never existed. ``save_now=True`` saves in the handler anyway, for loops that cannot
call ``save_point`` often enough (you then own the consistency of what is saved).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType

SIGNAL_VARIABLE = "SMSUPERVISE_CHECKPOINT_SIGNAL"
DONE_VARIABLE = "SMSUPERVISE_CHECKPOINT_DONE"
STACKS_DIR_VARIABLE = "SMSUPERVISE_STACKS_DIR"
STACKS_SIGNAL_VARIABLE = "SMSUPERVISE_STACKS_SIGNAL"
_stacks_file: list[object] = []  # keeps the dump file open for faulthandler


class StopHandle:
    """What ``register`` returns: ask it, at safe points, whether to save and stop."""

    def __init__(
        self, save: Callable[[], object], signum: int, done_file: str | None, save_now: bool
    ) -> None:
        self._save = save
        self.signum = signum
        self.done_file = done_file
        self.save_now = save_now
        self.requested = False  # a stop was asked for
        self.saved = False  # the checkpoint for it was saved and acknowledged

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.save_now:
            self._save_and_acknowledge()

    def save_point(self) -> bool:
        """Call between training steps. If a stop was asked for: save (once), acknowledge, and
        return True, meaning the loop should end. Otherwise return False at once."""
        if not self.requested:
            return False
        if not self.saved:
            self._save_and_acknowledge()
        return True

    def _save_and_acknowledge(self) -> None:
        if self.saved:
            return
        self._save()
        self.saved = True
        if self.done_file:
            with open(self.done_file, "w") as handle:
                handle.write(f"{os.getpid()}\n")


def _signal_number(name: str) -> int:
    name = name.strip().upper()
    if name.isdigit():
        return int(name)
    return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])


def enable_stacks(environ: dict[str, str] | None = None) -> bool:
    """Let ``smsupervise-debug stacks`` read this process's Python stacks without ptrace.

    When ``SMSUPERVISE_STACKS_DIR`` is set (smsupervise sets it for the job), every thread's stack
    is dumped into ``<dir>/<pid>`` on ``SMSUPERVISE_STACKS_SIGNAL`` (default SIGURG, harmless to
    processes that did not opt in). ``register()`` calls this. Returns whether it is enabled.
    """
    import faulthandler  # noqa: PLC0415 - only when asked

    env = os.environ if environ is None else environ
    directory = env.get(STACKS_DIR_VARIABLE)
    if not directory or _stacks_file:
        return bool(_stacks_file)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        dump = open(os.path.join(directory, str(os.getpid())), "ab")  # noqa: SIM115 - kept open
    except OSError:
        return False
    signum = _signal_number(env.get(STACKS_SIGNAL_VARIABLE) or "SIGURG")
    faulthandler.register(signum, file=dump, all_threads=True)
    _stacks_file.append(dump)
    return True


def stop_signal(environ: dict[str, str] | None = None) -> int:
    """The signal that announces a stop: ``SMSUPERVISE_CHECKPOINT_SIGNAL``, else SIGTERM."""
    env = os.environ if environ is None else environ
    name = env.get(SIGNAL_VARIABLE, "").strip()
    return _signal_number(name) if name else int(signal.SIGTERM)


def register(save: Callable[[], object], *, save_now: bool = False) -> StopHandle:
    """Handle the stop signal in this process: ``save`` runs at the next ``save_point()`` (or in the
    handler with ``save_now=True``), then the acknowledgement file is created. Call it from the
    main thread (Python's rule for signal handlers)."""
    handle = StopHandle(save, stop_signal(), os.environ.get(DONE_VARIABLE) or None, save_now)
    signal.signal(handle.signum, handle._on_signal)
    enable_stacks()
    return handle
