"""From the invocation to a ``Plan`` (pure), and from the plan to a ready tree (``prepare``).

``decide(invocation, env, machine)`` reads the config files and looks at the source, but writes
nothing, starts nothing and probes nothing: the debug mode's ``inspect`` calls it alone and shows
exactly what ``train`` then runs. ``prepare(plan)`` does the side effects: it puts the source in
place and makes a shell entry point executable. Machine facts (GPUs via ``nvidia-smi``) are probed
by the caller (``probe.machine``) and passed in.

``train`` is resolved in this order: (1) ``SMSUPERVISE_TRAIN``, a command line; (2) script mode,
``SAGEMAKER_PROGRAM`` or the ``sagemaker_program`` hyperparameter, as sagemaker-training runs it;
(3) a ``train`` program on PATH other than smsupervise itself; (4) otherwise a configuration error
that lists what was looked for.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # train mode's machinery is imported when train mode runs: exec mode starts faster
    from smsupervise.distributed.cluster import ClusterPlan
    from smsupervise.pipemode.channel import ChannelSpec
    from smsupervise.sagemaker import config, environment, runners

from smsupervise.core.spawn import LaunchSpec, Step, StepKind
from smsupervise.core.status import ExitCode
from smsupervise.errors import ConfigError, SpawnError
from smsupervise.sagemaker import limits, probe
from smsupervise.sagemaker.notes import Note
from smsupervise.sagemaker.script import Script
from smsupervise.settings import Invocation, Settings

_SAFE_ENTRY = r"^[A-Za-z0-9._][A-Za-z0-9._+-]*(/[A-Za-z0-9._+-]+)*$"  # compiled at use: train only


class Plan(NamedTuple):
    """Everything decided before anything runs."""

    steps: tuple[Step, ...]  # empty only while the source is still to be downloaded
    outcome_dir: str | None  # where success/failure files go (train mode)
    notes: tuple[Note, ...] = ()  # events to log once running
    ack_file: str | None = None  # SMSUPERVISE_CHECKPOINT_DONE, when --checkpoint-signal is set
    pipes: tuple[ChannelSpec, ...] = ()  # Pipe channels to relay (--pipe-relay)
    script: Script | None = None  # script mode: what prepare puts in place
    runner: runners.Runner | None = None  # script mode's runner for the entry (None: after download)
    cluster: ClusterPlan | None = None  # distributed jobs: launcher, peers, fail-fast, rank logs


def _never() -> bool:
    return False


def _ourselves() -> frozenset[str]:
    """Real paths that are smsupervise itself, so `train` on PATH never resolves to us."""
    return frozenset({os.path.realpath(sys.argv[0])} if sys.argv and sys.argv[0] else set())


def _tmpdir(env: Mapping[str, str]) -> str:
    """$TMPDIR, else /tmp (tempfile and secrets cost 5 ms of start-up for this one path)."""
    return env.get("TMPDIR") or "/tmp"


def new_run_id() -> str:
    """A name part unique to this run (PID namespaces share /tmp on one host)."""
    return f"{os.getpid()}-{os.urandom(6).hex()}"


def decide(
    invocation: Invocation,
    env: Mapping[str, str],
    machine: environment.Machine | None = None,
    run_id: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Plan:
    """Decide what to run, writing nothing; raises ``ConfigError`` (exit 2) or ``SpawnError`` (126/127).

    ``machine`` holds the probed facts train mode needs (None: no GPUs or Neuron cores found);
    ``run_id`` names this run's checkpoint acknowledgement file and relay directory;
    ``should_stop`` is asked while a source archive is read: on a stop the plan keeps only a
    training step that never starts (as ``prepare`` does on a stop).
    """
    run_id = run_id or new_run_id()
    if invocation.mode == "exec":
        main = Step(StepKind.MAIN, "command", LaunchSpec(invocation.args, dict(env)))
        planned = Plan((main,), None)
    elif invocation.mode == "serve":
        planned = _serve(invocation, env)
    else:
        planned = _train(invocation, env, machine, run_id, should_stop or _never)
    # Every step names its working directory: smsupervise itself moves to / before the loop.
    here = os.getcwd()
    steps = tuple(
        s._replace(spec=s.spec._replace(cwd=here)) if s.spec.cwd is None else s for s in planned.steps
    )
    return _with_checkpoint_protocol(planned._replace(steps=steps), invocation.settings, env, run_id)


def _with_checkpoint_protocol(planned: Plan, settings: Settings, env: Mapping[str, str], run_id: str) -> Plan:
    """With --checkpoint-signal, the main step learns the signal and where to acknowledge it."""
    if settings.checkpoint_signal is None:
        return planned
    ack_file = os.path.join(_tmpdir(env), f"smsupervise-{run_id}.checkpoint-done")
    extra = {
        "SMSUPERVISE_CHECKPOINT_SIGNAL": signal.Signals(settings.checkpoint_signal).name,
        "SMSUPERVISE_CHECKPOINT_DONE": ack_file,
    }
    steps = tuple(_with_env(step, extra) if step.kind is StepKind.MAIN else step for step in planned.steps)
    script = planned.script
    if script is not None:
        script = script._replace(env={**script.env, **extra})
    return planned._replace(steps=steps, ack_file=ack_file, script=script)


def _with_env(step: Step, extra: Mapping[str, str]) -> Step:
    return step._replace(spec=step.spec._replace(env={**step.spec.env, **extra}))


def _serve(invocation: Invocation, env: Mapping[str, str]) -> Plan:
    if env.get("SMSUPERVISE_SERVE"):
        import shlex  # noqa: PLC0415 - serve and train only (exec mode's start-up time counts)

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
    main = Step(StepKind.MAIN, "serving", LaunchSpec((*argv, *invocation.args), dict(env)))
    return Plan((main,), None)


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
    if not re.match(_SAFE_ENTRY, name) or ".." in name.split("/") or "." in name.split("/")[:-1]:
        raise ConfigError(
            where,
            field,
            f"{name!r} is not a plain relative path",
            "use only letters, digits, '.', '_', '+', '-' and '/', not starting with '-' or "
            "'/', without '.' or '..' segments, e.g. train.py or bin/train.sh",
        )
    return name


def _train(
    invocation: Invocation,
    env: Mapping[str, str],
    machine: environment.Machine | None,
    run_id: str,
    should_stop: Callable[[], bool],
) -> Plan:
    planned = _train_plan(invocation, env, machine, run_id, should_stop)
    hp_file = os.path.join(invocation.settings.base_dir, "input", "config", "hyperparameters.json")
    _check_launches(planned, hp_file)
    return planned


def _check_launches(planned: Plan, hp_file: str) -> None:
    """Every step's argv and environment within what execve takes (``limits.check_launch``);
    the variables added later (the checkpoint protocol's, the control socket's) fit in its slack."""
    for step in planned.steps:
        limits.check_launch(step.spec, hp_file)


def _train_plan(
    invocation: Invocation,
    env: Mapping[str, str],
    machine: environment.Machine | None,
    run_id: str,
    should_stop: Callable[[], bool],
) -> Plan:
    from smsupervise.sagemaker import config, environment  # noqa: PLC0415 - see TYPE_CHECKING above

    cfg = config.load(invocation.settings.base_dir)
    instance_type = str(cfg.resource_config.get("current_instance_type", "local"))
    facts = environment.machine_for(machine or environment.Machine(os.cpu_count() or 1), instance_type)
    tenv = environment.build(cfg, env, facts)
    child_env = dict(env)
    child_env.update(tenv.variables)
    # Deliberately not the toolkit's PYTHONPATH=<its own sys.path> (toolkit#186: it breaks the
    # image's venvs and conda envs): the code dir goes first, anything already there stays.
    existing = env.get("PYTHONPATH")
    child_env["PYTHONPATH"] = tenv.code_dir + (os.pathsep + existing if existing else "")
    child_env.setdefault("SMSUPERVISE_CHECKPOINT_DIR", cfg.checkpoint_dir)
    pipes = _pipe_relay(invocation.settings, cfg, child_env, env, run_id)
    limits.check_exec_limits(child_env, cfg)
    output_dir = cfg.path("output")
    if env.get("SMSUPERVISE_TRAIN"):
        import shlex  # noqa: PLC0415 - serve and train only (exec mode's start-up time counts)

        argv = (*shlex.split(env["SMSUPERVISE_TRAIN"]), *invocation.args)
        main = Step(StepKind.MAIN, "training", LaunchSpec(argv, child_env))
        return Plan((main,), output_dir, pipes=pipes)
    if tenv.entry_point:
        planned = _script_mode(
            invocation, cfg, tenv, child_env, output_dir, run_id=run_id, should_stop=should_stop
        )
        return planned._replace(pipes=pipes)
    program = probe.on_path("train", env, _ourselves())
    if program is not None:
        main = Step(StepKind.MAIN, "training", LaunchSpec((program, *invocation.args), child_env))
        return Plan((main,), output_dir, pipes=pipes)
    raise ConfigError(
        cfg.path("input", "config", "hyperparameters.json"),
        "sagemaker_program",
        "nothing to train: SMSUPERVISE_TRAIN is unset, there is no SAGEMAKER_PROGRAM variable "
        f"or 'sagemaker_program' hyperparameter, and no `train` program on "
        f"PATH={env.get('PATH', '')} other than smsupervise itself",
        f"set one of them (script mode: sagemaker_program=train.py with your code in {cfg.path('code')})",
    )


def _pipe_relay(
    settings: Settings,
    cfg: config.TrainingConfig,
    child_env: dict[str, str],
    env: Mapping[str, str],
    run_id: str,
) -> tuple[ChannelSpec, ...]:
    """With --pipe-relay: the Pipe channels to relay; SM_CHANNEL_<CH> points at the relay's FIFOs."""
    channels = cfg.pipe_channels()
    if not settings.pipe_relay or not channels:
        return ()
    relay_dir = settings.pipe_relay_dir or os.path.join(_tmpdir(env), f"smsupervise-pipes-{run_id}")
    child_env["SMSUPERVISE_PIPE_DIR"] = relay_dir
    upstream = cfg.path("input", "data")
    for channel in channels:
        child_env[f"SM_CHANNEL_{channel.upper()}"] = os.path.join(relay_dir, channel)
    from smsupervise.pipemode.channel import ChannelSpec  # noqa: PLC0415

    return tuple(ChannelSpec(ch, upstream, relay_dir, settings.pipe_buffer) for ch in channels)


def _script_mode(
    invocation: Invocation,
    cfg: config.TrainingConfig,
    tenv: environment.TrainingEnv,
    env: dict[str, str],
    output_dir: str,
    *,
    run_id: str,
    should_stop: Callable[[], bool],
) -> Plan:
    hp_file = cfg.path("input", "config", "hyperparameters.json")
    entry = validate_entry_point(str(tenv.entry_point), hp_file)
    if tenv.submit_dir != tenv.code_dir:
        from smsupervise.sagemaker import sourcedir  # noqa: PLC0415 - tarfile: 3.5 ms of start-up

        settings = invocation.settings
        bounds = sourcedir.Limits(settings.source_max_bytes, settings.source_max_members)
        try:
            action, names, files, root = sourcedir.view(
                tenv.submit_dir, tenv.code_dir, hp_file, bounds, should_stop
            )
        except sourcedir.Stopped:
            when = f"while planning: reading {tenv.submit_dir}"
            return _never_started(when, tenv.submit_dir, tenv.code_dir, env, output_dir)
    else:
        names = frozenset(os.listdir(tenv.code_dir)) if os.path.isdir(tenv.code_dir) else frozenset()
        action, files, root = "keep", None, tenv.code_dir
    args = (*tenv.user_args, *invocation.args)
    from smsupervise.sagemaker import distribution, runners  # noqa: PLC0415 - train mode only

    options = distribution.cluster_options(invocation.settings, env)
    job_variables = tuple(k for k in tenv.variables if k.startswith("SM_"))
    script = Script(
        entry,
        tenv.code_dir,
        hp_file,
        tenv.submit_dir,
        action,
        None,
        args,
        env,
        job_variables,
        options,
        run_id,
    )
    if names is None:  # on S3: the runner is chosen once the source is downloaded
        plan = Plan((), output_dir, script=script._replace(python=_python_if(env)))
        from smsupervise.sagemaker import distribution  # noqa: PLC0415 - train mode only

        return plan._replace(notes=distribution.runner_notes(env, None))
    present = (
        entry in files if files is not None else root is None or os.path.isfile(os.path.join(root, entry))
    )
    if not present:
        raise _not_in_source(script, sorted(names))
    python = user_python(env) if runners.needs_python(entry, names) else None
    script = script._replace(python=python)
    runner = runners.choose(entry, names, python, args, env, tenv.code_dir)
    plan = Plan(runner.steps, output_dir, script=script, runner=runner)
    return _distributed(plan, runner)


def _python_if(env: Mapping[str, str]) -> str | None:
    return env.get("SMSUPERVISE_PYTHON") or probe.on_path("python3", env)


def _distributed(plan: Plan, runner: runners.Runner) -> Plan:
    """torchrun or mpirun in place of the entry point, when the job asks for it (the toolkit's rule)."""
    from smsupervise.sagemaker import distribution  # noqa: PLC0415 - train mode only

    script = plan.script
    assert script is not None
    python = script.python or _python_if(script.env) or "python3"
    runner, planned, notes = distribution.wire(script, runner, python, _tmpdir(script.env))
    if planned is not None and planned.launch is not None:
        plan = plan._replace(steps=runner.steps)
    return plan._replace(cluster=planned, notes=plan.notes + notes)


def _not_in_source(script: Script, names: list[str]) -> ConfigError:
    held = ", ".join(names[:10]) or "nothing"
    problem = f"{script.entry!r} is not a file in {script.code_dir} (it holds: {held})"
    if script.env.get("SAGEMAKER_PROGRAM"):  # the toolkit's rule: the variable wins over the hyperparameter
        return ConfigError(
            "the environment",
            "SAGEMAKER_PROGRAM",
            problem,
            "the image's or the job's SAGEMAKER_PROGRAM overrides the sagemaker_program hyperparameter "
            "(as in sagemaker-training): name a file of the source, or set it to the hyperparameter's value",
        )
    return ConfigError(
        script.where, "sagemaker_program", problem, "check the name and sagemaker_submit_directory"
    )


def _never_started(
    when: str, source: str, code_dir: str, env: Mapping[str, str], outcome_dir: str | None
) -> Plan:
    """A stop while the source was read: a training step that never starts (the supervisor ends
    the run as a stop before training started; the failure file says where it was)."""
    label = f"training (source fetch stopped {when})"
    never = Step(StepKind.MAIN, label, LaunchSpec(("false",), dict(env), None))
    fields = {"source": source, "code_dir": code_dir, "when": when}
    return Plan((never,), outcome_dir, notes=(Note("warning", "source_stopped", fields),))


def prepare(
    plan: Plan, settings: Settings | None = None, should_stop: Callable[[], bool] | None = None
) -> tuple[Plan, tuple[Note, ...]]:
    """Put the script's source in place and make a shell entry point executable: the side effects
    ``decide`` left out. Returns the plan (its steps chosen now when the source was on S3) and
    what was done, to be logged.

    ``settings`` gives the source limits; ``should_stop`` is asked while the source is fetched:
    on a stop nothing is left behind and the plan keeps only a training step that never starts
    (the supervisor then ends the run as a stop before training started)."""
    script = plan.script
    if script is None:
        return plan, ()
    notes: list[Note] = []
    if script.source_action != "keep":
        from smsupervise.sagemaker import sourcedir  # noqa: PLC0415 - tarfile+shutil: start-up time

        settings = settings or Settings.defaults("train")
        bounds = sourcedir.Limits(settings.source_max_bytes, settings.source_max_members)
        try:
            action = sourcedir.fetch(
                script.source, script.code_dir, script.where, bounds, should_stop or (lambda: False)
            )
        except sourcedir.Stopped as stopped:
            never = _never_started(str(stopped), script.source, script.code_dir, script.env, plan.outcome_dir)
            return plan._replace(steps=never.steps), never.notes
        ready = {"source": script.source, "code_dir": script.code_dir, "action": action}
        notes.append(Note("info", "source_ready", ready))
    os.makedirs(script.code_dir, exist_ok=True)
    entry_path = os.path.join(script.code_dir, script.entry)
    if not os.path.realpath(entry_path).startswith(os.path.realpath(script.code_dir) + os.sep):
        raise ConfigError(
            script.where,
            "sagemaker_program",
            f"{script.entry!r} resolves outside {script.code_dir}",
            "point it at a file inside the source directory",
        )
    listing = sorted(os.listdir(script.code_dir))
    if not os.path.isfile(entry_path):
        raise _not_in_source(script, listing)
    if plan.runner is None:
        from smsupervise.sagemaker import runners  # noqa: PLC0415 - train mode only

        names = frozenset(listing)
        python = user_python(script.env) if runners.needs_python(script.entry, names) else None
        runner = runners.choose(script.entry, names, python, script.args, script.env, script.code_dir)
        plan = plan._replace(steps=runner.steps, runner=runner, script=script._replace(python=python))
        plan = _distributed(plan._replace(notes=()), runner)
        _check_launches(plan, script.where)
    if plan.runner is not None and plan.runner.make_executable:
        os.chmod(entry_path, os.stat(entry_path).st_mode | 0o111)  # noqa: S103 (the toolkit's chmod +x)
    if plan.cluster is not None and plan.cluster.launch is not None:
        from smsupervise.sagemaker import distribution  # noqa: PLC0415 - distributed jobs only

        distribution.require_software(plan.cluster.launch, script.env, script.where)
    return plan, tuple(notes)
