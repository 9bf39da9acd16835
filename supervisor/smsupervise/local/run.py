"""A training job's life on this machine, as the service runs it.

Starting (the hosts' trees and namespaces) -> Downloading (channels staged, checkpoints copied in)
-> Training (every host's PID 1 running; output relayed, metrics read, checkpoints mirrored) ->
Uploading (model.tar.gz, output.tar.gz) -> Completed | Failed | Stopped | MaxRuntimeExceeded.

The platform's stop (a stop request = SIGINT/SIGTERM to the runner, or MaxRuntimeInSeconds):
SIGTERM to every host's PID 1, SIGKILL ``kill_after`` seconds later (120 s, as the service); a
second stop request SIGKILLs at once. A host that fails stops the others the same way (our
choice: the service does not document how it ends the other hosts). Everything waits on one
queue (host exits, stop requests, the upload's end) with a deadline: no polling, no sleeps.

While Uploading (packing runs in a process of its own, ``uploader``, so that it can be ended at
once): a first stop request is noted and the upload goes on (the model is what the stop's grace
is for), the job ends Stopped; a further one (or the first after an earlier stop) kills the
upload, removes what it wrote, and the job ends Stopped without ModelArtifacts.

Every way out of ``run`` ends describe.json in a final status with a reason: an error anywhere
(a full disk, a failing ``ip``, a bug) ends the job Failed with ``InternalServerError: while
<SecondaryStatus>: <error>``; space for that last describe.json is kept aside from the start, so a
full disk cannot keep it ``InProgress``. One run at a time per work dir: ``workdir.lock`` (an
flock the kernel drops when the run dies) refuses a second one, naming the first one's pid.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import signal
import subprocess
import time
from dataclasses import dataclass

import orjson

from smsupervise.errors import ConfigError
from smsupervise.local import channels, checkpoints, describe, diagnosis, hosts, launch, s3, tree, workdir
from smsupervise.local.console import Console
from smsupervise.local.job import Metric, TrainingJob
from smsupervise.local.logs import HostLog, relay
from smsupervise.local.metrics import Extractor
from smsupervise.local.upload import claim, give_back_tree
from smsupervise.local.uploader import Uploaded, UploadProcess

EXIT_CODES = {"Completed": 0, "Failed": 1, "Stopped": 3}
ROOT_HOSTS = 254  # hosts.SUBNET is a /24: algo-K is .K
ABORTED_UPLOAD = (
    "Training job stopped: a second stop request ended the upload; no model was saved "
    "(what the upload had written is removed)"
)


class UploadFailed(Exception):
    """The upload process met an error (its type and text are the message)."""


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
        self.extractor = Extractor(job.metrics, on_slow=self._slow_metric, on_broken=self._matcher_broken)
        self.work = os.path.abspath(options.work_dir)
        self.stop_signal: int | None = None  # read while Downloading (no host to tell yet)
        self.stop_count = 0  # stop requests so far
        self._reserve: workdir.Reserve | None = None

    def request_stop(self, signum: int) -> None:
        """StopTrainingJob (safe in a signal handler: SimpleQueue.put is reentrant, and the
        attribute is one store)."""
        self.stop_signal = signum
        self.stop_count += 1
        self.events.put(("stop", signum, 0))

    def _slow_metric(self, metric: Metric, budget: float) -> None:
        self.console.event(
            "metric_regex_too_slow",
            f"MetricDefinitions {metric.name!r}: its regex {metric.regex!r} searched one line for more than "
            f"{budget:g} s (catastrophic backtracking?); it is not searched any more: make it linear, "
            "e.g. without nested repetition",
            metric=metric.name,
            regex=metric.regex,
            budget=budget,
        )

    def _matcher_broken(self, error: str) -> None:
        self.console.event("metrics_not_read", f"metrics are not read any more: {error}", error=error)

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
        try:
            return describe.write(self.work, body)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if status == "InProgress":  # the disk is full: the final status matters, not this one
                self.console.event(
                    "describe_not_written",
                    f"describe.json not updated to {self.timeline.current} (the final one will be): {error}",
                    status=self.timeline.current,
                    error=str(error),
                )
                return os.path.join(self.work, "describe.json")
            if self._reserve is None or not self._reserve.release():  # the space kept aside is for this
                raise
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
                skip = self._skip_note(plan.host.name)
                copied = remote.copy_in(local, skip)
                self.console.event(
                    "checkpoints_copied_in",
                    f"{plan.host.name}: {copied} checkpoint files copied in",
                    host=plan.host.name,
                    files=copied,
                )
                mirrors.append(checkpoints.Mirror(local, remote, skip))
        board = self.job.tensorboard  # TensorBoardOutputConfig: mirrored out as the checkpoints are
        if board is not None:
            relative = os.path.relpath(board.local_path, "/opt/ml")
            mirrors += [
                checkpoints.Mirror(
                    os.path.join(p.tree, relative),
                    checkpoints.location(board.uri),
                    self._skip_note(p.host.name),
                )
                for p in plans
            ]
        return checkpoints.Mirroring(mirrors, self.options.checkpoint_interval)

    def _skip_note(self, host: str) -> checkpoints.Skip:
        def note(name: str, kind: str) -> None:
            self.console.event(
                "checkpoint_skipped",
                f"{host}: checkpoint {name} is {kind}, not a regular file: not copied",
                host=host,
                file=name,
                kind=kind,
            )

        return note

    def _feeders(self, plans: list[launch.HostPlan]) -> list[subprocess.Popen[bytes]]:
        feeders = []
        for plan in (p for p in plans if p.staged.feeds):
            with open(os.path.join(self.work, "logs", f"pipe-{plan.host.name}.jsonl"), "ab") as log:
                for feed in plan.staged.feeds:
                    argv = channels.feed_argv(feed, os.path.join(plan.tree, "input", "data"))
                    feeders.append(  # a feeder waiting for its FIFO's reader must not outlive us
                        subprocess.Popen(
                            launch.dying_with_us(tuple(argv)),
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=log,
                        )
                    )
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
            self.extractor.close()
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

    def _drain_stops(self) -> None:
        """Stop requests still queued from before Uploading (their hosts are gone; ``stop_count``
        has them)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.events.get_nowait()

    def _upload(self, plans: list[launch.HostPlan]) -> Uploaded | None:
        """Pack and place the archives in a process of their own; None when a further stop request
        (the second in all) ended it."""
        began = time.time()
        process = UploadProcess(
            self.job,
            [p.tree for p in plans],
            self.work,
            self.console,
            lambda: self.events.put(("uploaded", 0, 0)),
        )
        while True:
            kind, _index, _code = self.events.get()
            if kind == "uploaded":
                done = process.join()
                if done.uri is None:  # it failed: nothing of it stays
                    process.remove_written(began)
                return done
            if kind != "stop":
                continue
            if self.stop_count <= 1:
                self.console.event(
                    "stop_while_uploading",
                    "a stop request while Uploading: the upload goes on (the model is saved), then the job "
                    "ends Stopped; another stop request ends the upload now",
                )
                continue
            self.console.event("upload_stopped", "a second stop request: the upload ends now, unfinished")
            process.kill(began)
            return None

    def _isolation_note(self, mode: hosts.Isolation) -> str:
        return _ISOLATION_NOTE[mode]

    def run(self) -> Result:
        """Run the job to its end and write describe.json; returns how it ended. Raises WorkDirBusy
        (nothing touched) when another run holds the work dir, WorkDirRefused (as root) when the work
        dir is not a new or empty one of the caller's."""
        workdir.check_free(self.work)  # a busy dir is named as such, before claim sees its lock file
        claim(self.work)  # as root: a new or empty dir of the caller's, else WorkDirRefused
        held = workdir.lock(self.work)
        self._reserve = workdir.Reserve(self.work)
        try:
            return self._run()
        except Exception as error:  # every way out ends in a final status with a reason
            return self._runner_error(error)
        finally:
            self._reserve.release()
            os.close(held)

    def _runner_error(self, error: Exception) -> Result:
        where = self.timeline.current
        what = str(error) if isinstance(error, UploadFailed) else f"{type(error).__name__}: {error}"
        failure = f"InternalServerError: while {where}: {what}"[: describe.FAILURE_LIMIT]
        self.console.event("runner_error", f"error while {where}: {error}", error=str(error), status=where)
        self.timeline.enter("Failed")
        self.timeline.transitions[-1]["EndTime"] = self.timeline.transitions[-1]["StartTime"]
        path = self._describe("Failed", failure, None)
        with contextlib.suppress(OSError):
            give_back_tree(self.work)
        return Result("Failed", "Failed", failure, path)

    def _diagnosis(self, plans: list[launch.HostPlan], first_failed: int | None) -> None:
        """diagnosis.json (FailureClass) beside describe.json; a full disk skips it, said once (the
        space kept aside is for describe.json's final status)."""
        try:
            diagnosis.write(self.work, plans, first_failed)
        except OSError as error:
            self.console.event(
                "diagnosis_not_written", f"diagnosis.json not written: {error}", error=str(error)
            )

    def _preflight(self, mode: str) -> Result | None:
        """Before any host is made: the fields not acted on, each said once; a host count this
        isolation cannot give, refused as a client error (None: go on)."""
        for notice in self.job.notices:
            self.console.event(notice.kind, f"{notice.path}: {notice.why}", field=notice.path, why=notice.why)
        count = self.job.instance_count
        if mode == "root" and count > ROOT_HOSTS:  # before making 254 namespaces to no end
            return self._client_error(
                ValueError(
                    f"ResourceConfig.InstanceCount {count}: as root each host gets an address in "
                    f"{hosts.SUBNET}.0/24, so at most {ROOT_HOSTS} hosts; ask for fewer"
                )
            )
        return None

    def _run(self) -> Result:
        os.makedirs(os.path.join(self.work, "logs"), exist_ok=True)
        self._enter("Starting")
        mode = self._isolation()
        self.console.event("isolation", self._isolation_note(mode), isolation=mode)
        refused = self._preflight(mode)
        if refused is not None:
            return refused
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
        self._diagnosis(plans, next(iter(failed), None))
        failure, model_uri = None, None
        if stop.reason in ("StopRequested", "MaxRuntimeExceeded"):
            status, secondary = (
                "Stopped",
                "Stopped" if stop.reason == "StopRequested" else "MaxRuntimeExceeded",
            )
        elif failed:
            status = secondary = "Failed"
            by_name = {plans[i - 1].host.name: i for i in failed}  # exit order
            first = by_name[describe.first_failed(list(by_name), os.path.join(self.work, "logs"))]
            failure = _failure_reason(plans[first - 1], failed[first])
        else:
            status = secondary = "Completed"
        message = ""
        if status != "Failed":
            self._drain_stops()
            self._enter("Uploading")
            done = self._upload(plans)
            if done is None:  # a further stop request ended it
                status, secondary, message = (
                    "Stopped",
                    "Stopped" if status == "Completed" else secondary,
                    ABORTED_UPLOAD,
                )
            elif done.s3_error is not None:  # e.g. the output bucket does not exist
                return self._client_error(s3.S3Error(done.s3_error))
            elif done.error is not None:
                raise UploadFailed(done.error)
            else:
                model_uri = done.uri
                self.console.uploaded = done.uploaded  # counted in the upload process
                if status == "Completed" and self.stop_count > 0:
                    status = secondary = "Stopped"  # a stop was asked for: say so
        self.timeline.enter(secondary, message)
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
