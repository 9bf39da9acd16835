"""The command line: ``smsupervise [OPTIONS] train|serve|[--] CMD [ARGS...]``.

Option parsing stops at the first word that is not an option, so ``smsupervise ls -l`` runs ``ls -l``.
Only ``train`` and ``serve`` (as that first word) are reserved; ``--`` ends the options and makes the
next word a command even if it is ``train``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Mapping, Sequence

from smsupervise import __version__
from smsupervise.errors import SupervisorError, UsageError
from smsupervise.options import OPTIONS, OPTIONS_BY_NAME, Mode
from smsupervise.settings import Invocation, Settings

USAGE = "usage: smsupervise [OPTIONS] train | serve | [--] CMD [ARGS...]"


class _Exit(Exception):
    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = text


def help_text() -> str:
    """``--help``: every option with its environment variable and default (tini style)."""
    lines = [
        USAGE,
        "",
        "Runs CMD (or the SageMaker `train` / `serve` program) as a supervised child: reaps zombies,",
        "forwards signals, stops gracefully, and exits with the child's status.",
        "",
        "Options (each also settable as an environment variable; a flag wins over its variable):",
    ]
    from textwrap import wrap  # noqa: PLC0415 (only for --help: start-up time counts)

    for option in OPTIONS:
        flag = f"--{option.name}" + (f" {option.metavar}" if option.metavar else "")
        lines.append(f"  {flag}")
        lines += wrap(option.help, 96, initial_indent="      ", subsequent_indent="      ")
        lines.append(f"      env {option.env}, default {option.shown_default()}")
    lines += [
        "  -h, --help     show this help and exit",
        "  -V, --version  show the version and exit",
        "",
        "Exit status: the child's code; 128+N if it was killed by signal N; 127 program not found;",
        "126 not executable; 2 usage or configuration error; 70 internal error.",
    ]
    return "\n".join(lines) + "\n"


def parse(argv: Sequence[str], env: Mapping[str, str]) -> Invocation:
    """Turn argv (without the program name) into an ``Invocation``; raises ``UsageError``."""
    flags: dict[str, object] = {}
    index = 0
    forced_command = False
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            forced_command = True
            break
        if not word.startswith("-") or word == "-":
            break
        if word in ("-h", "--help"):
            raise _Exit(0, help_text())
        if word in ("-V", "--version"):
            raise _Exit(0, f"smsupervise {__version__}\n")
        name, has_value, value = word[2:].partition("=")
        option = OPTIONS_BY_NAME.get(name) if word.startswith("--") else None
        if option is None:
            raise UsageError(f"unknown option {word!r}; `smsupervise --help` lists the options")
        if option.metavar is None:
            flags[option.field] = option.parse(value, f"option --{name}") if has_value else True
        else:
            if not has_value:
                index += 1
                if index >= len(argv):
                    raise UsageError(f"option --{name} needs a value ({option.metavar})")
                value = argv[index]
            flags[option.field] = option.parse(value, f"option --{name}")
        index += 1
    rest = tuple(argv[index:])
    if not rest:
        raise UsageError("nothing to run: give `train`, `serve`, or a command (see --help)")
    mode: Mode = "exec"
    if not forced_command and rest[0] in ("train", "serve"):
        mode = "train" if rest[0] == "train" else "serve"
        rest = rest[1:]
    return Invocation(mode=mode, args=rest, settings=Settings.from_sources(flags, env, mode))


def main(argv: Sequence[str]) -> int:
    """Parse the command line and run; returns the exit code (the caller exits with it)."""
    # Signal handlers go in first, before the heavy imports, so that a SIGTERM sent while we start
    # is recorded (as PID 1 the kernel drops any signal that has no handler: pid_namespaces(7)).
    from smsupervise.core import signals  # noqa: PLC0415

    inbox = signals.install()
    try:
        invocation = parse(argv, os.environ)
    except _Exit as done:
        sys.stdout.write(done.text)
        return done.code
    except SupervisorError as error:
        sys.stderr.write(f"smsupervise: {error.message()}\n{USAGE}\n")
        return error.exit_code
    from smsupervise import app  # noqa: PLC0415

    # Start-up is over (entry() turned the collector off): what it made lives as long as we do, so
    # it goes to the permanent generation, out of every later collection's way.
    gc.freeze()
    gc.enable()
    return app.run(invocation, inbox)


def open_standard_fds() -> None:
    """Open any of fds 0-2 that we were started without (``>&-``) on /dev/null, first thing: else
    the first file or socket we open takes that number, and our output or the event loop's own
    fds end up crossed (libuv asserts on it)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if fd in (1, 2) and (sys.stdout if fd == 1 else sys.stderr) is None:
                stream = open(fd, "w", closefd=False)  # noqa: SIM115 - lives as long as we do
                if fd == 1:
                    sys.stdout = stream
                else:
                    sys.stderr = stream


def entry() -> None:
    """Console-script entry point: run, flush, and leave at once (no slow interpreter teardown)."""
    # No cyclic-garbage collection while the imports (asyncio's included) build modules and classes
    # that all live to the end: each pass would only scan them again, ~1 ms for a young-generation
    # one (benchmarks/pid1.py, start-up). main() turns it back on once the imports are done.
    gc.disable()
    open_standard_fds()
    code = 70
    try:
        code = main(sys.argv[1:])
    except BaseException:  # a bug: say so, and never exit 0
        import traceback  # noqa: PLC0415

        traceback.print_exc()
        sys.stderr.write("smsupervise: internal error (exit 70); please report it with the trace above\n")
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
