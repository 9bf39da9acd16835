"""A training job's life on this machine, as the service runs it.

Starting (the hosts' trees and namespaces) -> Downloading (channels staged, checkpoints copied in)
-> Training (every host's PID 1 running; output relayed, metrics read, checkpoints mirrored) ->
Uploading (model.tar.gz, output.tar.gz) -> Completed | Failed | Stopped | MaxRuntimeExceeded.

The platform's stop (a stop request = SIGINT/SIGTERM to the runner, or MaxRuntimeInSeconds):
SIGTERM to every host's PID 1, SIGKILL ``kill_after`` seconds later (120 s, as the service); a
second stop request SIGKILLs at once. A host that fails stops the others the same way (our
choice: the service does not document how it ends the other hosts). Everything waits on one
queue (host exits, stop requests) with a deadline: no polling, no sleeps.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time
from dataclasses import dataclass

import orjson

from smsupervise.errors import ConfigError
from smsupervise.local import channels, checkpoints, describe, diagnosis, hosts, launch, s3, tree
from smsupervise.local.console import Console
from smsupervise.local.job import TrainingJob
from smsupervise.local.logs import HostLog, relay
from smsupervise.local.metrics import Extractor
from smsupervise.local.upload import give_back_tree, upload

EXIT_CODES = {"Completed": 0, "Failed": 1, "Stopped": 3}


@dataclass(frozen=True, slots=True)
class Options:
    """How to run (from the command line)."""

    work_dir: str
    kill_after: float = 120.0
    checkpoint_interval: float = 1.0
    isolation: hosts.Isolation | None = None  # None: the strongest available
    netns_prefix: str = hosts.PREFIX


@dataclass(frozen=True, slots=True)
class Result:
    """How the job ended."""

    status: str  # Completed | Failed | Stopped
    secondary: str
    failure: str | None
    describe_path: str

    @property
    def exit_code(self) -> int:
        """0 Completed, 1 Failed, 3 Stopped."""
        return EXIT_CODES[self.status]


@dataclass
class _Stop:
    reason: str | None = None  # StopRequested | MaxRuntimeExceeded | HostFailed
    kill_at: float | None = None


def _failure_reason(plan: launch.HostPlan, code: int) -> str:
    path = os.path.join(plan.tree, "output", "failure")
    try:
        with open(path, errors="replace") as handle:
            text = handle.read(describe.FAILURE_LIMIT).strip()
    except OSError:
        text = ""
    how = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
    return (
        f"AlgorithmError: {plan.host.name} {how}: {text}"
        if text
        else f"AlgorithmError: {plan.host.name} {how}"
    )


class Runner:
    """Runs one validated job; ``requests`` receives stop requests (from signal handlers)."""

    def __init__(self, job: TrainingJob, options: Options, console: Console) -> None:
        self.job, self.options, self.console = job, options, console
        self.events: queue.SimpleQueue[tuple[str, int, int]] = queue.SimpleQueue()
        self.timeline = describe.Timeline()
        self.extractor = Extractor(job.metrics)
        self.work = os.path.abspath(options.work_dir)
        self.stop_signal: int | None = None  # read while Downloading (no host to tell yet)

    def request_stop(self, signum: int) -> None:
        """StopTrainingJob (safe in a signal handler: SimpleQueue.put is reentrant, and the
        attribute is one store)."""
        self.stop_signal = signum
        self.events.put(("stop", signum, 0))

    def _stopping(self) -> bool:
        return self.stop_signal is not None

    def _enter(self, status: str) -> None:
        self.timeline.enter(status)
        self.console.set_status(status)
        self._describe("InProgress", None, None)

    def _describe(self, status: str, failure: str | None, model_uri: str | None) -> str:
        body = describe.response(
            self.job,
            self.timeline,
            status=status,
            failure=failure,
            final=self.extractor.final(),
            model_uri=model_uri,
        )
        return describe.write(self.work, body)

    def _stage(self, net: hosts.Network, mode: hosts.Isolation) -> list[launch.HostPlan]:
        self._enter("Downloading")
        hosts_file = os.path.join(self.work, "etc-hosts")
        with open(hosts_file, "w") as handle:
            handle.write(net.hosts_file())
        plans = []
        for host in net.hosts:
            root = os.path.join(self.work, "hosts", host.name, "opt_ml")
            base = "/opt/ml" if mode != "basedir" else root
            tree.write(self.job, root, host.name, base)
            if self._stopping():
                raise s3.Stopped(f"before {host.name}'s channels")
            self._source(root, host.name)
            staged = channels.stage(
                self.job.channels, host.index, self.job.instance_count, self.work, self._stopping
            )
            self.console.staged += staged.bytes
            plan = self._prepare(host, mode, root, staged, hosts_file)
            if plan.base != base:  # userns without /opt/ml: the job sees the tree's own path
                tree.write(self.job, root, host.name, plan.base)
            plans.append(plan)
        return plans

    def _source(self, root: str, host: str) -> None:
        """An s3:// ``sagemaker_submit_directory`` is put into the host's code dir here (downloaded
        and unpacked safely, all or nothing): a host in its own network namespace cannot reach S3.
        The job's smsupervise then keeps it, as the toolkit keeps a code dir that is not empty."""
        uri = submit_directory_uri(self.job)
        if uri is None or not uri.startswith("s3://"):
            return
        from smsupervise.sagemaker import sourcedir  # noqa: PLC0415 - only for an s3:// source

        try:
            done = sourcedir.fetch(
                uri, os.path.join(root, "code"), "HyperParameters", should_stop=self._stopping
            )
        except sourcedir.Stopped as stopped:
            raise s3.Stopped(str(stopped)) from None
        self.console.event("source_staged", f"{host}: {done} into its code dir", host=host, source=uri)

    def _prepare(
        self, host: hosts.Host, mode: hosts.Isolation, root: str, staged: channels.Staged, hosts_file: str
    ) -> launch.HostPlan:
        """One host's plan (a container runner plans differently)."""
        return launch.prepare(self.job, host, mode, tree=root, staged=staged, hosts_file=hosts_file)

    def _start(self, plan: launch.HostPlan, mode: hosts.Isolation) -> launch.HostProcess:
        """Start one host (a container runner starts a container)."""
        return launch.HostProcess(plan, mode)

    def _isolation(self) -> hosts.Isolation:
        return self.options.isolation or hosts.isolation()

    def _mirrors(self, plans: list[launch.HostPlan]) -> checkpoints.Mirroring:
        mirrors = []
        if self.job.checkpoint is not None:
            remote = checkpoints.location(self.job.checkpoint.uri)
            for plan in plans:
                local = os.path.join(plan.tree, os.path.relpath(self.job.checkpoint.local_path, "/opt/ml"))
                copied = remote.copy_in(local)
                self.console.event(
                    "checkpoints_copied_in",
                    f"{plan.host.name}: {copied} checkpoint files copied in",
                    host=plan.host.name,
                    files=copied,
                )
                mirrors.append(checkpoints.Mirror(local, remote))
        return checkpoints.Mirroring(mirrors, self.options.checkpoint_interval)

    def _feeders(self, plans: list[launch.HostPlan]) -> list[subprocess.Popen[bytes]]:
        feeders = []
        for plan in (p for p in plans if p.staged.feeds):
            with open(os.path.join(self.work, "logs", f"pipe-{plan.host.name}.jsonl"), "ab") as log:
                for feed in plan.staged.feeds:
                    argv = channels.feed_argv(feed, os.path.join(plan.tree, "input", "data"))
                    feeders.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        return feeders

    def _begin_stop(self, running: dict[int, launch.HostProcess], stop: _Stop, reason: str) -> None:
        stop.reason = reason
        stop.kill_at = time.monotonic() + self.options.kill_after
        if reason != "HostFailed":
            self._enter("Stopping")
        self.console.event(
            "stop",
            f"{reason}: SIGTERM to every host's PID 1, SIGKILL in {self.options.kill_after:g} s",
            reason=reason,
            kill_after=self.options.kill_after,
        )
        for host in running.values():
            host.signal(signal.SIGTERM)

    def _wait(self, started: dict[int, launch.HostProcess], codes: dict[int, int]) -> _Stop:
        """Wait for every host to exit (``codes`` fills in exit order), stopping them when due."""
        running, stop = dict(started), _Stop()
        runtime_deadline = time.monotonic() + self.job.max_runtime
        while running:
            deadline = stop.kill_at if stop.kill_at is not None else runtime_deadline
            try:
                wait = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
                kind, index, code = self.events.get(timeout=wait)
            except queue.Empty:
                if stop.reason is None:
                    self._begin_stop(running, stop, "MaxRuntimeExceeded")
                else:
                    self.console.event("kill", "the stop's time is up: SIGKILL", hosts=len(running))
                    for host in running.values():
                        host.signal(signal.SIGKILL)
                    stop.kill_at = float("inf")
                continue
            if kind == "exit":
                codes[index] = code
                running.pop(index, None)
                if code != 0 and stop.reason is None:
                    self._begin_stop(running, stop, "HostFailed")
            elif stop.reason is None:
                self._begin_stop(running, stop, "StopRequested")
            else:
                stop.kill_at = time.monotonic()  # a second stop request: SIGKILL now
        return stop

    def _train(
        self, plans: list[launch.HostPlan], mode: hosts.Isolation, mirroring: checkpoints.Mirroring
    ) -> tuple[_Stop, dict[int, int]]:
        feeders = self._feeders(plans)
        self._enter("Training")
        started: dict[int, launch.HostProcess] = {}
        codes: dict[int, int] = {}
        threads = []
        try:
            mirroring.start()
            for plan in plans:
                host = self._start(plan, mode)
                started[plan.host.index] = host
                log = HostLog(os.path.join(self.work, "logs", f"{plan.host.name}.jsonl"), self.work)
                threads += relay(host, log, self.extractor, self.console, self.events)
            return self._wait(started, codes), codes
        finally:
            for index, host in started.items():  # only after an error in here: never leave a host running
                if index not in codes:
                    host.signal(signal.SIGKILL)
            for thread in threads:
                thread.join()
            for feeder in feeders:
                feeder.terminate()
                feeder.wait()
            mirroring.stop()
            for mirror in mirroring.mirrors:
                for name, problem in mirror.problems.items():
                    self.console.event(
                        "checkpoint_not_mirrored", f"{name}: {problem}", file=name, error=problem
                    )

    def _client_error(self, error: Exception) -> Result:
        failure = f"ClientError: {error}"
        self.console.event("client_error", failure, error=str(error))
        self.timeline.enter("Failed")
        path = self._describe("Failed", failure, None)
        give_back_tree(self.work)
        return Result("Failed", "Failed", failure, path)

    def _stopped_before_training(self, where: str) -> Result:
        """A stop request while Downloading: no host ever starts, nothing is uploaded (there is no
        model), the job is Stopped; what was downloaded so far is gone (all or nothing)."""
        self.console.event("stop", f"StopRequested {where}: no host was started", reason="StopRequested")
        self.timeline.enter("Stopped")
        self.timeline.transitions[-1]["EndTime"] = self.timeline.transitions[-1]["StartTime"]
        path = self._describe("Stopped", None, None)
        give_back_tree(self.work)
        return Result("Stopped", "Stopped", None, path)

    def _isolation_note(self, mode: hosts.Isolation) -> str:
        return _ISOLATION_NOTE[mode]

    def run(self) -> Result:
        """Run the job to its end and write describe.json; returns how it ended."""
        os.makedirs(os.path.join(self.work, "logs"), exist_ok=True)
        self._enter("Starting")
        mode = self._isolation()
        self.console.event("isolation", self._isolation_note(mode), isolation=mode)
        with hosts.network(self.job.instance_count, mode, self.options.netns_prefix) as net:
            try:
                plans = self._stage(net, mode)
                mirroring = self._mirrors(plans)  # checkpoints are copied in while Downloading
            except s3.Stopped as stopped:
                return self._stopped_before_training(str(stopped))
            except (OSError, ValueError, ConfigError) as error:  # the service: a ClientError
                return self._client_error(error)
            stop, codes = self._train(plans, mode, mirroring)
        failed = {i: c for i, c in codes.items() if c != 0}
        diagnosis.write(self.work, plans, next(iter(failed), None))  # FailureClass, beside describe.json
        failure, model_uri = None, None
        if stop.reason in ("StopRequested", "MaxRuntimeExceeded"):
            status, secondary = (
                "Stopped",
                "Stopped" if stop.reason == "StopRequested" else "MaxRuntimeExceeded",
            )
        elif failed:
            status = secondary = "Failed"
            first = next(iter(failed))  # the first to fail (exit order), not one stopped because of it
            failure = _failure_reason(plans[first - 1], failed[first])
        else:
            status = secondary = "Completed"
        if status != "Failed":
            try:
                self._enter("Uploading")
                model_uri = upload(self.job, [p.tree for p in plans], self.work, self.console)
            except s3.S3Error as error:  # e.g. the output bucket does not exist
                return self._client_error(error)
        self.timeline.enter(secondary)
        self.timeline.transitions[-1]["EndTime"] = self.timeline.transitions[-1]["StartTime"]
        path = self._describe(status, failure, model_uri)
        give_back_tree(self.work)
        return Result(status, secondary, failure, path)


_ISOLATION_NOTE = {
    "root": "each host is PID 1 of its own PID, mount and UTS namespaces (network namespaces for N > 1), "
    "its tree mounted at /opt/ml",
    "userns": "not root: each host runs in a user namespace (PID, mount, UTS), sharing this machine's "
    "network",
    "basedir": "no namespaces available: hosts are plain processes with SAGEMAKER_BASE_DIR; channels are "
    "symlinks, not read-only",
}


def submit_directory_uri(job: TrainingJob) -> str | None:
    """The ``sagemaker_submit_directory`` hyperparameter, decoded as the SDK JSON-encodes it."""
    value = job.hyperparameters.get("sagemaker_submit_directory")
    if value is None:
        return None
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    return decoded if isinstance(decoded, str) else value
