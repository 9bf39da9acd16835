"""From the invocation to a ``Plan``: the steps to run, with which environment, where.

``train`` is resolved in this order: (1) ``SMSUPERVISE_TRAIN``, a command line; (2) script mode,
``SAGEMAKER_PROGRAM`` or the ``sagemaker_program`` hyperparameter, as sagemaker-training runs it;
(3) a ``train`` program on PATH other than smsupervise itself; (4) otherwise a configuration error
that lists what was looked for.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # train mode's machinery is imported when train mode runs: exec mode starts faster
    from smsupervise.pipemode.relay import ChannelSpec
    from smsupervise.sagemaker import config, environment

from smsupervise.cli import Invocation
from smsupervise.core.spawn import LaunchSpec
from smsupervise.core.status import ExitCode
from smsupervise.errors import ConfigError, SpawnError
from smsupervise.sagemaker import probe
from smsupervise.settings import Settings

_SAFE_ENTRY = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._+-]*(/[A-Za-z0-9._+-]+)*$")


class Step(NamedTuple):
    """One process to run to completion; a failing preparation step ends the run."""

    name: str  # "training", "installing requirements", "serving", "command"
    spec: LaunchSpec


class Plan(NamedTuple):
    """Everything decided before anything runs."""

    steps: tuple[Step, ...]
    outcome_dir: str | None  # where success/failure files go (train mode)
    notes: tuple[tuple[str, dict[str, object]], ...] = ()  # events to log once running
    ack_file: str | None = None  # SMSUPERVISE_CHECKPOINT_DONE, when --checkpoint-signal is set
    pipes: tuple[ChannelSpec, ...] = ()  # Pipe channels to relay (--pipe-relay)


def _ourselves() -> frozenset[str]:
    """Real paths that are smsupervise itself, so `train` on PATH never resolves to us."""
    return frozenset({os.path.realpath(sys.argv[0])} if sys.argv and sys.argv[0] else set())


def _tmpdir() -> str:
    """$TMPDIR, else /tmp (tempfile and secrets cost 5 ms of start-up for this one path)."""
    return os.environ.get("TMPDIR") or "/tmp"


def base_dir(settings: Settings, env: Mapping[str, str]) -> str:
    return settings.base_dir or env.get("SAGEMAKER_BASE_DIR") or "/opt/ml"


def plan(invocation: Invocation, env: Mapping[str, str]) -> Plan:
    """Decide what to run; raises ``ConfigError`` (exit 2) or ``SpawnError`` (126/127)."""
    if invocation.mode == "exec":
        planned = Plan((Step("command", LaunchSpec(invocation.args, dict(env))),), None)
    elif invocation.mode == "serve":
        planned = _serve(invocation, env)
    else:
        planned = _train(invocation, env)
    return _with_checkpoint_protocol(planned, invocation.settings)


def _with_checkpoint_protocol(planned: Plan, settings: Settings) -> Plan:
    """With --checkpoint-signal, the main step learns the signal and where to acknowledge it.

    The acknowledgement file gets a fresh name per run (PID namespaces share /tmp on one host).
    """
    if settings.checkpoint_signal is None:
        return planned
    ack_file = os.path.join(_tmpdir(), f"smsupervise-{os.getpid()}-{os.urandom(6).hex()}.checkpoint-done")
    *before, main = planned.steps
    env = dict(main.spec.env)
    env["SMSUPERVISE_CHECKPOINT_SIGNAL"] = signal.Signals(settings.checkpoint_signal).name
    env["SMSUPERVISE_CHECKPOINT_DONE"] = ack_file
    steps = (*before, main._replace(spec=main.spec._replace(env=env)))
    return planned._replace(steps=steps, ack_file=ack_file)


def _serve(invocation: Invocation, env: Mapping[str, str]) -> Plan:
    if env.get("SMSUPERVISE_SERVE"):
        argv = tuple(shlex.split(env["SMSUPERVISE_SERVE"]))
    else:
        program = probe.on_path("serve", env, _ourselves())
        if program is None:
            raise SpawnError(
                "serve",
                f"nothing to serve: SMSUPERVISE_SERVE is unset and there is no `serve` "
                f"program on PATH={env.get('PATH', '')} (other than smsupervise itself)",
                ExitCode.USAGE,
            )
        argv = (program,)
    return Plan((Step("serving", LaunchSpec((*argv, *invocation.args), dict(env))),), None)


def user_python(env: Mapping[str, str]) -> str:
    """The image's Python for the user's code: SMSUPERVISE_PYTHON, else python3 on PATH."""
    chosen = env.get("SMSUPERVISE_PYTHON") or probe.on_path("python3", env)
    if not chosen:
        raise SpawnError(
            "python3",
            f"no python3 on PATH={env.get('PATH', '')} for the training script; "
            "set SMSUPERVISE_PYTHON to the interpreter to use",
            ExitCode.NOT_FOUND,
        )
    return chosen


def validate_entry_point(name: str, where: str) -> str:
    """sagemaker-training 5.1.4's rule: a plain relative path inside the source directory."""
    field = "sagemaker_program"
    if not name:
        raise ConfigError(
            where,
            field,
            "the training entry point is empty",
            "set it to your script's path relative to the source directory, e.g. train.py",
        )
    if not _SAFE_ENTRY.match(name) or ".." in name.split("/") or "." in name.split("/")[:-1]:
        raise ConfigError(
            where,
            field,
            f"{name!r} is not a plain relative path",
            "use only letters, digits, '.', '_', '+', '-' and '/', not starting with '-' or "
            "'/', without '.' or '..' segments, e.g. train.py or bin/train.sh",
        )
    return name


def _train(invocation: Invocation, env: Mapping[str, str]) -> Plan:
    base = base_dir(invocation.settings, env)
    from smsupervise.sagemaker import config, environment  # noqa: PLC0415 - see TYPE_CHECKING above

    cfg = config.load(base)
    instance_type = str(cfg.resource_config.get("current_instance_type", "local"))
    tenv = environment.build(cfg, env, probe.machine(env, instance_type))
    child_env = dict(env)
    child_env.update(tenv.variables)
    # Deliberately not the toolkit's PYTHONPATH=<its own sys.path> (toolkit#186: it breaks the
    # image's venvs and conda envs): the code dir goes first, anything already there stays.
    existing = env.get("PYTHONPATH")
    child_env["PYTHONPATH"] = tenv.code_dir + (os.pathsep + existing if existing else "")
    child_env.setdefault("SMSUPERVISE_CHECKPOINT_DIR", cfg.checkpoint_dir)
    pipes = _pipe_relay(invocation.settings, cfg, child_env)
    output_dir = cfg.path("output")
    if env.get("SMSUPERVISE_TRAIN"):
        argv = (*shlex.split(env["SMSUPERVISE_TRAIN"]), *invocation.args)
        return Plan((Step("training", LaunchSpec(argv, child_env)),), output_dir, pipes=pipes)
    if tenv.entry_point:
        return _script_mode(invocation, cfg, tenv, child_env, output_dir)._replace(pipes=pipes)
    program = probe.on_path("train", env, _ourselves())
    if program is not None:
        argv = (program, *invocation.args)
        return Plan((Step("training", LaunchSpec(argv, child_env)),), output_dir, pipes=pipes)
    raise ConfigError(
        cfg.path("input", "config", "hyperparameters.json"),
        "sagemaker_program",
        "nothing to train: SMSUPERVISE_TRAIN is unset, there is no SAGEMAKER_PROGRAM variable "
        f"or 'sagemaker_program' hyperparameter, and no `train` program on "
        f"PATH={env.get('PATH', '')} other than smsupervise itself",
        f"set one of them (script mode: sagemaker_program=train.py with your code in {cfg.path('code')})",
    )


def _pipe_relay(
    settings: Settings, cfg: config.TrainingConfig, child_env: dict[str, str]
) -> tuple[ChannelSpec, ...]:
    """With --pipe-relay: the Pipe channels to relay; SM_CHANNEL_<CH> points at the relay's FIFOs."""
    channels = cfg.pipe_channels()
    if not settings.pipe_relay or not channels:
        return ()
    relay_dir = settings.pipe_relay_dir or os.path.join(
        _tmpdir(), f"smsupervise-pipes-{os.getpid()}-{os.urandom(4).hex()}"
    )
    child_env["SMSUPERVISE_PIPE_DIR"] = relay_dir
    upstream = cfg.path("input", "data")
    for channel in channels:
        child_env[f"SM_CHANNEL_{channel.upper()}"] = os.path.join(relay_dir, channel)
    from smsupervise.pipemode.relay import ChannelSpec  # noqa: PLC0415

    return tuple(ChannelSpec(ch, upstream, relay_dir, settings.pipe_buffer) for ch in channels)


def _script_mode(
    invocation: Invocation,
    cfg: config.TrainingConfig,
    tenv: environment.TrainingEnv,
    env: dict[str, str],
    output_dir: str,
) -> Plan:
    hp_file = cfg.path("input", "config", "hyperparameters.json")
    entry = validate_entry_point(str(tenv.entry_point), hp_file)
    notes: list[tuple[str, dict[str, object]]] = []
    if tenv.submit_dir != tenv.code_dir:
        from smsupervise.sagemaker import sourcedir  # noqa: PLC0415 - tarfile+shutil: 3.5 ms of start-up

        action = sourcedir.fetch(tenv.submit_dir, tenv.code_dir, hp_file)
        ready: dict[str, object] = {"source": tenv.submit_dir, "code_dir": tenv.code_dir, "action": action}
        notes.append(("source_ready", ready))
    os.makedirs(tenv.code_dir, exist_ok=True)
    entry_path = os.path.join(tenv.code_dir, entry)
    if not os.path.realpath(entry_path).startswith(os.path.realpath(tenv.code_dir) + os.sep):
        raise ConfigError(
            hp_file,
            "sagemaker_program",
            f"{entry!r} resolves outside {tenv.code_dir}",
            "point it at a file inside the source directory",
        )
    if not os.path.isfile(entry_path):
        raise ConfigError(
            hp_file,
            "sagemaker_program",
            f"{entry!r} is not a file in {tenv.code_dir} "
            f"(it holds: {', '.join(sorted(os.listdir(tenv.code_dir))[:10]) or 'nothing'})",
            "check the name and sagemaker_submit_directory",
        )
    framework = json.loads(env.get("SM_FRAMEWORK_PARAMS") or "{}")
    from smsupervise.sagemaker.environment import DISTRIBUTED_FLAGS  # noqa: PLC0415

    wanted = [flag for flag in DISTRIBUTED_FLAGS if framework.get(flag) is True]
    if wanted:
        notes.append(
            (
                "runner_not_supported",
                {
                    "flags": wanted,
                    "impact": "the entry point runs once per host, as the toolkit's plain process runner "
                    "does; no mpirun, smddprun or torchrun is started for you",
                    "fix": "start your launcher yourself: "
                    "SMSUPERVISE_TRAIN='torchrun --nproc-per-node 8 train.py'",
                },
            )
        )
    listing = os.listdir(tenv.code_dir)
    requirements = "requirements.txt" in listing
    args = [*tenv.user_args, *invocation.args]
    cwd = tenv.code_dir
    steps: list[Step] = []
    package = "setup.py" in listing or "pyproject.toml" in listing
    if entry.endswith(".sh") or not (package or entry.endswith(".py")):
        # The toolkit's shell runner: `.sh`, and any other entry that is neither a package nor .py.
        os.chmod(entry_path, os.stat(entry_path).st_mode | 0o111)  # noqa: S103 (the toolkit's chmod +x)
        command = f"./{shlex.quote(entry)} {' '.join(shlex.quote(a) for a in args)}"
        argv: tuple[str, ...] = ("/bin/sh", "-c", command)
    elif package:
        python = user_python(env)
        extra = ("-r", "requirements.txt") if requirements else ()
        install = (python, "-m", "pip", "install", ".", *extra)
        steps.append(Step("installing the package", LaunchSpec(install, env, cwd)))
        argv = (python, "-m", re.sub(r"\.py$", "", entry), *args)
    else:
        python = user_python(env)
        if requirements:
            install = (python, "-m", "pip", "install", "-r", "requirements.txt")
            steps.append(Step("installing requirements.txt", LaunchSpec(install, env, cwd)))
        argv = (python, "--", entry, *args)
    steps.append(Step("training", LaunchSpec(argv, env, cwd)))
    return Plan(tuple(steps), output_dir, tuple(notes))
