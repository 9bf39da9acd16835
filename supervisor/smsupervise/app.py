"""The composition root: a synchronous prelude, one event loop, a synchronous epilogue.

Train-only modules (config, environment, sourcedir, tarfile, the pipe relay) are imported lazily
where they are used: exec mode must start within 1.2x of a bare Python (benchmarks/pid1.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from smsupervise.core.plugins import NO_CLUSTER, JobControl, Service, ServiceFactory
from smsupervise.core.signals import SignalInbox
from smsupervise.core.spawn import Step, controlling_terminal
from smsupervise.core.status import ExitCode, ExitStatus
from smsupervise.core.supervise import Outcome, Run, Supervisor
from smsupervise.errors import SupervisorError
from smsupervise.linux import libc
from smsupervise.sagemaker import outcome as outcome_files
from smsupervise.sagemaker import plan as planning
from smsupervise.sagemaker import probe
from smsupervise.sagemaker.notes import Note
from smsupervise.settings import Invocation, Settings
from smsupervise.streams.events import EventLog

if TYPE_CHECKING:
    from smsupervise.diagnose.doctor import Doctor
    from smsupervise.distributed.coordinator import Coordinator, Verdict
    from smsupervise.serve.processes import Processes

T = TypeVar("T")


def become_reaper(log: EventLog) -> None:
    """As PID 1 we reap by nature; otherwise ask to be a child subreaper, and say so once."""
    if os.getpid() == 1:
        return
    error = libc.set_child_subreaper()
    if error is None:
        log.info(
            "subreaper_enabled",
            reason="not PID 1: orphaned descendants are re-parented to "
            "smsupervise, which reaps them and stops them when the child exits",
        )
        return
    log.warning(
        "subreaper_failed",
        error=error,
        impact="orphaned descendants will be re-parented to another process: smsupervise "
        "cannot reap them or stop them when the child exits",
        fix='run smsupervise as PID 1 (ENTRYPOINT ["smsupervise"]) or on a kernel >= 3.4',
    )


def _run_loop(main: Coroutine[Any, Any, T], loop_name: str) -> T:
    if loop_name == "asyncio":
        import asyncio  # noqa: PLC0415

        return asyncio.run(main)
    import uvloop  # noqa: PLC0415

    return uvloop.run(main)


async def _supervise(  # noqa: PLR0917 - the composition root hands over what it made
    supervisor: Supervisor,
    cluster: Coordinator | None,
    plan: planning.Plan,
    log: EventLog,
    doctor: Doctor,
    processes: Processes | None = None,
) -> tuple[Outcome, str]:
    """Run the job; in a distributed job, then tell the other hosts how it ended, take the cluster's
    verdict (the first failure leads; an MPI worker takes the master's outcome) and write the outcome
    file. Returns the outcome and what happened, in words. An essential --also process that ended
    the run makes its exit code non-zero, whatever the main program's."""
    outcome = await supervisor.run()
    if processes is not None and processes.failure is not None and outcome.exit_code == 0:
        outcome = outcome._replace(exit_code=processes.failure[1].shell_code() or 1)
    what_happened = _explained(outcome, doctor)
    if doctor.hang_is_success(outcome):  # the model is written: an exit hang is not a failure
        outcome = outcome._replace(exit_code=0)
    if cluster is None:
        return outcome, what_happened  # the outcome file is written already (record)
    from smsupervise.distributed.coordinator import Ending  # noqa: PLC0415

    ok = outcome_files.finished(outcome) or doctor.hang_is_success(outcome)
    stopped = outcome.stop is not None and not ok
    ending = Ending(ok, outcome.exit_code, what_happened, stopped, outcome.stderr_tail, supervisor.ended_at)
    outcome, what_happened = _cluster_verdict(outcome, what_happened, await cluster.finish(ending))
    _record_outcome(plan, outcome, what_happened, log, doctor)
    return outcome, what_happened


def _coordinator(plan: planning.Plan, log: EventLog) -> Coordinator | None:
    if plan.cluster is None:
        return None
    from smsupervise.distributed.coordinator import Coordinator  # noqa: PLC0415 - distributed jobs only

    return Coordinator(plan.cluster, log, os.environ.get("TRAINING_JOB_NAME", ""))


def _cluster_verdict(outcome: Outcome, what_happened: str, verdict: Verdict) -> tuple[Outcome, str]:
    """A distributed job: the first failure in the cluster leads; an MPI worker takes the master's outcome."""
    if verdict.adopted is not None:  # the toolkit's workers always report success; ours tell the truth
        adopted = verdict.adopted
        status = ExitStatus(code=adopted.exit_code) if adopted.exit_code < 128 else outcome.status
        outcome = outcome._replace(status=status, exit_code=adopted.exit_code, stop=None)
        what_happened = f"The MPI master {adopted.host}: {adopted.headline}"
    if verdict.tail is not None:
        outcome = outcome._replace(stderr_tail=verdict.tail)
    if verdict.root_cause is not None:
        what_happened = f"{verdict.root_cause}\n{what_happened}"
    return outcome, what_happened


def _record_outcome(
    plan: planning.Plan, outcome: Outcome, what_happened: str, log: EventLog, doctor: Doctor | None = None
) -> None:
    if plan.outcome_dir is None:
        return
    try:
        hang_ok = doctor is not None and doctor.hang_is_success(outcome)
        if outcome_files.finished(outcome) or hang_ok:  # a stopped run did not finish, whatever its code
            outcome_files.write_success(plan.outcome_dir)
            return
        failure_class = None if doctor is None else doctor.failure_class_name()
        text = outcome_files.compose(what_happened, outcome.stderr_tail)
        _write_failure(plan.outcome_dir, text, log, failure_class)
    except OSError as error:
        log.error("outcome_not_written", dir=plan.outcome_dir, error=str(error))


def _write_failure(output_dir: str, text: str, log: EventLog, failure_class: str | None = None) -> None:
    path = os.path.join(output_dir, "failure")
    if failure_class is not None:  # first: the failure file stays the last thing written (a test's cue)
        outcome_files.write_failure_class(output_dir, failure_class)
    written = outcome_files.write_failure(output_dir, text)
    if written.written:
        log.info("failure_written", path=path, reason=text[:200], failure_class=failure_class)
    elif written.problem is not None:
        log.error("outcome_not_written", dir=output_dir, error=written.problem)
    else:
        log.info(
            "failure_kept",
            path=path,
            reason="the program wrote its own failure file; its words win",
            failure_class=failure_class,
        )


def _clear_stale(output_dir: str, log: EventLog) -> None:
    try:
        removed = outcome_files.clear_stale(output_dir)
    except OSError as error:
        log.error("outcome_not_written", dir=output_dir, error=str(error))
        return
    for path in removed:
        log.info("stale_outcome_removed", path=path, reason="left over from an earlier run in this tree")


def _log_notes(notes: tuple[Note, ...], log: EventLog) -> None:
    for note in notes:
        (log.warning if note.level == "warning" else log.info)(note.event, **note.fields)


def prelude(invocation: Invocation, log: EventLog, inbox: SignalInbox) -> planning.Plan:
    """Before the loop: become a reaper, decide the plan, clear stale outcome files, prepare."""
    become_reaper(log)
    machine = probe.machine(os.environ) if invocation.mode == "train" else None
    plan = planning.decide(invocation, os.environ, machine, should_stop=inbox.stop_pending)  # a stop ends it
    if plan.outcome_dir is not None:
        _clear_stale(plan.outcome_dir, log)
    plan, done = planning.prepare(plan, invocation.settings, inbox.stop_pending)  # a stop ends a fetch
    _log_notes(plan.notes + done, log)
    # Every path is absolute by now and every step names its cwd: like dumb-init and catatonit,
    # a supervisor must not hold the mount it was started in busy for the whole job.
    os.chdir("/")
    if invocation.settings.log_format == "json":
        libc.keep_heap()
    return plan


def not_started(invocation: Invocation, error: SupervisorError, log: EventLog) -> int:
    """The plan could not be made or prepared: say why, in the failure file too (train mode)."""
    log.error("start_failed", error=error.message(), exit_code=error.exit_code)
    base = invocation.settings.base_dir
    if invocation.mode == "train" and os.path.isdir(base):
        output_dir = os.path.join(base, "output")
        try:
            _clear_stale(output_dir, log)
            _write_failure(output_dir, f"Not started: {error.message()}", log, "Config")
        except OSError as write_error:
            log.error("outcome_not_written", dir=output_dir, error=str(write_error))
    log.info("exiting", exit_code=error.exit_code)
    return error.exit_code


def record(plan: planning.Plan, log: EventLog, doctor: Doctor) -> Callable[[Outcome], None]:
    """The outcome file, written as soon as the outcome is known (on the loop, before a keep-alive)."""
    return lambda outcome: _record_outcome(plan, outcome, _explained(outcome, doctor), log, doctor)


def _explained(outcome: Outcome, doctor: Doctor) -> str:
    """What happened, with what the diagnosis knows first (OOM kills, a full filesystem)."""
    diagnosis, _ = doctor.conclude(outcome)
    return outcome_files.explain(outcome, diagnosis, doctor.host)


def diagnosis_plugin(plan: planning.Plan, settings: Settings, log: EventLog) -> tuple[Doctor, Plugin]:
    """The diagnosis wing (diagnose/): a sampler service on the loop that hears of every reaped pid
    (``on_reaped``), and the exit-hang guard. Made before the supervisor (the outcome callback needs
    the doctor), it reaches the run through the ``JobControl`` its service factory is given."""
    from smsupervise.diagnose.doctor import Doctor  # noqa: PLC0415
    from smsupervise.diagnose.exithang import ExitHangGuard  # noqa: PLC0415

    main = plan.steps[-1].spec if plan.steps else None
    job: list[JobControl] = []  # the run, once the supervisor makes the service

    def main_pid() -> int | None:
        return job[0].main_pid() if job else None

    doctor = Doctor(
        log,
        interval=settings.sample_interval,
        base_dir=settings.base_dir,
        code_dir=main.cwd if main is not None and plan.outcome_dir is not None else None,
        host=main.env.get("SM_CURRENT_HOST") if main is not None else None,
        main=main_pid,
        skip=lambda: job[0].sibling_pids() if job else set(),
    )
    guard = ExitHangGuard(
        log,
        settings.exit_timeout,
        running=lambda: bool(job) and job[0].job_running(),
        main=main_pid,
        live=lambda: doctor.sampler.live,
        spawn=lambda argv: job[0].spawn_sibling(argv, {}, capture=False),
        request_stop=lambda reason: job[0].request_stop(reason),  # noqa: PLW0108 - job[0] is made later
    )
    doctor.watch_exit(guard, fails=settings.exit_hang_fails)

    def make(control: JobControl) -> Service:
        job.append(control)
        return doctor

    return doctor, Plugin({}, make)


class Plugin(NamedTuple):
    """A wing plugged into the run: what it adds to every step's environment, and its service."""

    env: Mapping[str, str]
    service: ServiceFactory


def debug_plugin(invocation: Invocation, log: EventLog) -> Plugin | None:
    """The control socket (debug/): bound now, served on the loop; the job learns its path. The
    server itself is imported at the first connection (``debug.listener``)."""
    settings = invocation.settings
    if settings.control_socket == "none":
        return None
    from smsupervise.debug import listener  # noqa: PLC0415 - not imported when the socket is off

    sock = listener.bind_for(settings.control_socket, settings.control_group, os.environ, log)
    if sock is None:
        return None
    return Plugin(
        listener.job_env(str(sock.getsockname())),
        lambda job: listener.ControlSocket(sock, job, invocation.mode, settings.control_group),
    )


def with_env(steps: tuple[Step, ...], extra: Mapping[str, str]) -> tuple[Step, ...]:
    """Every step, with ``extra`` added to its environment."""
    return tuple(step._replace(spec=step.spec._replace(env={**step.spec.env, **extra})) for step in steps)


def serve_plugin(invocation: Invocation, log: EventLog) -> Plugin | None:
    """The serve front (serve/), with --serve-front on: its port bound now (a taken port fails the
    start), the server told its own port in SAGEMAKER_BIND_TO_PORT, /ping and the relay served on
    the loop, and its drain run before the server's stop signal (a ``Drains`` service)."""
    settings = invocation.settings
    if not settings.serve_front:
        return None
    from smsupervise.serve import config as serve_config  # noqa: PLC0415 - only with the front on
    from smsupervise.serve.front import Front  # noqa: PLC0415
    from smsupervise.serve.workers import WorkerWatch  # noqa: PLC0415

    config = serve_config.resolve(settings, os.environ)
    sock = serve_config.listen(config.port)

    def make(job: JobControl) -> Service:
        front = Front(sock, config, log, job.job_running)
        front.workers = WorkerWatch(log)
        job.recent.followers.append(front.workers.follow)  # the server's words on its workers
        return front

    return Plugin({serve_config.PORT_VARIABLE: str(config.backend_port)}, make)


def processes_plugin(invocation: Invocation, log: EventLog, made: list[Processes]) -> Plugin | None:
    """--also FILE: the processes declared there run beside the main program (serve/processes),
    stopped in the file's order after the front's drain and before the main program's signal; the
    group made is put in ``made`` (its failure sets the exit code)."""
    path = invocation.settings.also
    if path is None:
        return None
    from smsupervise.serve import processes as declared  # noqa: PLC0415 - only with --also

    specs = declared.load(path)

    def make(job: JobControl) -> Service:
        group = declared.Processes(specs, job, log)
        made.append(group)
        return group

    return Plugin({}, make)


def epilogue(
    outcome: Outcome, what_happened: str, supervisor: Supervisor, log: EventLog, doctor: Doctor | None = None
) -> int:
    """After the loop (the outcome file was written first): what is left of the output (bounded
    by --flush-timeout, cut short by a stop signal), then the ``exiting`` event; returns our exit code."""
    code = outcome.exit_code if 0 <= outcome.exit_code <= 255 else int(ExitCode.SOFTWARE)
    dropped_bytes, dropped_events = supervisor.finish_output(
        time.monotonic() + supervisor.settings.flush_timeout
    )
    times = os.times()
    extra: dict[str, object] = {"stop": what_happened} if outcome.stop is not None else {}
    if dropped_bytes or dropped_events:
        extra.update(undelivered_bytes=dropped_bytes, dropped_events=dropped_events)
    if doctor is not None and doctor.failure_class_name() is not None:
        extra["failure_class"] = doctor.failure_class_name()
    log.info(
        "exiting",
        exit_code=code,
        runtime_s=round(outcome.runtime, 3),
        cpu_s=round(times.user + times.system, 3),
        **extra,
    )
    return code


def process_started() -> float:
    """When this process started, on the monotonic clock (/proc: both count from boot); now if unknown."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", "rb") as stat, open("/proc/uptime", "rb") as uptime:
            ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])  # field 22, starttime
            since_boot = float(uptime.read().split()[0])
        age = since_boot - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - age if 0 <= age < since_boot else now


def run(invocation: Invocation, inbox: SignalInbox) -> int:
    """Run the invocation to the end; returns smsupervise's exit code."""
    started = process_started()
    settings = invocation.settings
    log = EventLog(settings.log_format if settings.log_format == "text" else "json", settings.log_level)
    try:
        plan = prelude(invocation, log, inbox)
        cluster = _coordinator(plan, log)
        processes: list[Processes] = []
        doctor, diagnosis = diagnosis_plugin(plan, settings, log)
        found = (
            debug_plugin(invocation, log),
            serve_plugin(invocation, log),
            processes_plugin(invocation, log, processes),
            diagnosis,
        )
        plugins = [p for p in found if p is not None]
        steps = plan.steps
        for plugin in plugins:
            steps = with_env(steps, plugin.env)
        run = Run(steps, plan.ack_file, plan.pipes, controlling_terminal(0), started)
        supervisor = Supervisor(
            run,
            settings,
            inbox,
            log,
            cluster=NO_CLUSTER if cluster is None else cluster,
            services=[plugin.service for plugin in plugins],
            # a distributed job's outcome waits for the cluster's verdict (_supervise writes it)
            on_outcome=record(plan, log, doctor) if cluster is None else None,
            on_reaped=doctor.sampler.reaped,
        )
        main = _supervise(supervisor, cluster, plan, log, doctor, processes[0] if processes else None)
        outcome, what_happened = _run_loop(main, settings.event_loop)
    except SupervisorError as error:
        return not_started(invocation, error, log)
    return epilogue(outcome, what_happened, supervisor, log, doctor)
