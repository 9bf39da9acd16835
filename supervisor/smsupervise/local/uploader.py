"""The upload (``upload.upload``: packing and placing the archives) in a process of its own, so that
a second stop request can end it at once, with nothing of it left writing.

The runner forks when it is down to one thread (the hosts' readers and the checkpoint mirror have
been joined). The child ignores SIGINT (a terminal's Ctrl-C reaches the whole foreground group: the
runner decides), dies with the runner (``PR_SET_PDEATHSIG``), and answers once, as JSON on a pipe:
the model's URI, or the error it met. A thread of the runner waits for that answer and the child's
exit, then calls ``done`` (which puts an event on the runner's queue).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from smsupervise.local import s3
from smsupervise.local.console import Console
from smsupervise.local.job import TrainingJob
from smsupervise.local.upload import upload

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ARCHIVES = ("model.tar.gz", "output.tar.gz")


class Uploaded(NamedTuple):
    """How the upload ended: the model's URI, or the error it met (an S3 one, or any other)."""

    uri: str | None
    uploaded: int = 0  # bytes written
    s3_error: str | None = None
    error: str | None = None


class UploadProcess:
    """One upload, running from construction; ``result`` is set before ``done`` is called."""

    def __init__(
        self, job: TrainingJob, trees: list[str], work: str, console: Console, done: Callable[[], None]
    ) -> None:
        self.job, self.work = job, work
        self.result: Uploaded | None = None
        read, write = os.pipe()
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child (its coverage is not collected)
            os.close(read)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the runner died before the line above
                os._exit(1)
            _child(job, trees, work, console, write)
        os.close(write)
        self._waiter = threading.Thread(target=self._wait, args=(read, done), name="upload", daemon=True)
        self._waiter.start()

    def _wait(self, read: int, done: Callable[[], None]) -> None:
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        os.close(read)
        _pid, status = os.waitpid(self.pid, 0)
        try:
            answer = orjson.loads(b"".join(chunks))
            self.result = Uploaded(
                answer["uri"], answer.get("uploaded", 0), answer.get("s3_error"), answer.get("error")
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.result = Uploaded(None, error=f"the upload process ended with wait status {status}")
        done()

    def join(self) -> Uploaded:
        """Its result, once ``done`` was called."""
        self._waiter.join()
        assert self.result is not None
        return self.result

    def kill(self, since: float) -> None:
        """End it now, and remove what it wrote."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._waiter.join()
        self.remove_written(since)

    def remove_written(self, since: float) -> None:
        """Remove the archives, half or whole, written since ``since`` (an upload that failed or was
        ended leaves nothing of it: all or nothing)."""
        where = _target(self.job, self.work)
        for name in ARCHIVES:
            for path in (os.path.join(where, name), os.path.join(where, f"{name}.part")):
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime >= since - 1:
                        os.unlink(path)


def _target(job: TrainingJob, work: str) -> str:
    """Where ``upload.upload`` writes the archives (an s3:// output: packed in the work dir first)."""
    out = job.output_path
    if out.startswith("s3://"):
        return os.path.join(work, "upload")
    out = out[len("file://") :] if out.startswith("file://") else out
    return os.path.join(out, job.name, "output")


def _child(job: TrainingJob, trees: list[str], work: str, console: Console, write: int) -> None:
    """The child: its answer as JSON on ``write``, then ``_exit`` (never returns)."""
    answer: dict[str, Any]
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            uri = upload(job, trees, work, console)
            answer = {"uri": uri, "uploaded": console.uploaded}
        except s3.S3Error as error:
            answer = {"uri": None, "s3_error": str(error)}
        except BaseException as error:  # reported to the runner, which fails the job
            answer = {"uri": None, "error": f"{type(error).__name__}: {error}"[:2000]}
        os.write(write, orjson.dumps(answer))
    finally:
        os._exit(0)
