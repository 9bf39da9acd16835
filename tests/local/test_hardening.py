"""smsupervise-local against a hostile job and a careless user (issue 29): a catastrophic metric
regex, a line without end, special files among the checkpoints, errors at every stage, Ctrl-C while
Uploading, and two runs on one work dir. Each test runs the real CLI on a real kernel (hosts as PID 1
of their own namespaces) and has a twin where behaviour must stay as it is."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.local import checkpoints
from tests.conftest import sleep_until
from tests.local.conftest import LOCAL, described, needs_root, netns_prefix, request, run, run_args

WAIT = "sleep 1000 & wait"  # after `trap 'exit 0' TERM`: the job ends on the stop's SIGTERM


def _script(tmp: Path, script: str, **fields: Any) -> dict[str, Any]:
    """A request whose job is ``sh SCRIPT`` as PID 1 (ContainerEntrypoint; the script in a file:
    the API allows 256 characters per argument)."""
    body = request(tmp, "script", **fields)
    path = tmp / f"job-{body['TrainingJobName']}-{len(list(tmp.glob('job-*.sh')))}.sh"
    path.write_text(script)
    body["AlgorithmSpecification"]["ContainerEntrypoint"] = ["sh", str(path)]
    return body


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a log (a last line still being written is left out)."""
    if path.exists():
        with path.open("rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    yield orjson.loads(line)


def _logged(path: Path, text: str) -> bool:
    """Whether the last records of a log hold a line ``text`` (reads only the log's tail)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 65536))
            tail = handle.read()
    except FileNotFoundError:
        return False
    return orjson.dumps({"msg": text})[1:-1] in tail


def _status(tmp: Path, work: str = "work") -> str | None:
    try:
        return str(described(tmp, work)["SecondaryStatus"])
    except (OSError, orjson.JSONDecodeError):
        return None


def _events(stderr: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]


class _Runner:
    """The runner as a process the test can signal; killed at the end whatever happened."""

    def __init__(self, tmp: Path, body: dict[str, Any], *extra: str, work: str = "work") -> None:
        self.out, self.err = tmp / f"{work}.stdout", tmp / f"{work}.stderr"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                run_args(tmp, body, "--json", *extra, work=work), stdout=out, stderr=err
            )

    def events(self) -> list[dict[str, Any]]:
        """Its events so far."""
        return _events(self.err.read_text(errors="replace"))

    def wait_event(self, name: str) -> None:
        """Until the runner said ``name``."""
        sleep_until(lambda: any(e.get("event") == name for e in self.events()), timeout=60, what=name)

    def finish(self, timeout: float = 90) -> tuple[str, str, int]:
        """Its output and exit status; a runner still running at ``timeout`` fails the test."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the runner did not end within {timeout} s") from None
        return self.out.read_text(errors="replace"), self.err.read_text(errors="replace"), code

    def kill(self) -> None:
        """SIGKILL it if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def runners() -> Iterator[list[_Runner]]:
    """Every runner a test starts, killed afterwards if it is still running."""
    started: list[_Runner] = []
    yield started
    for runner in started:
        runner.kill()


# --- a catastrophic metric regex ------------------------------------------------------------------

SLOW = [  # (regex, a line it backtracks on for longer than anyone waits)
    ("(a+)+$", "a" * 64 + "!"),
    ("(a|aa)+$", "a" * 120 + "!"),
    (r"^(\w+\s?)*$", "word " * 40 + "!"),
    ("(x+x+)+y", "x" * 80),
]


@needs_root
@pytest.mark.parametrize(
    ("slow", "how"),
    [(SLOW[0], "SIGTERM"), (SLOW[1], "SIGINT"), (SLOW[2], "MaxRuntime"), (SLOW[3], "SIGTERM")],
    ids=["nested-plus-SIGTERM", "alternation-SIGINT", "words-MaxRuntime", "overlap-SIGTERM"],
)
def test_a_catastrophic_metric_regex_never_holds_the_runner(
    tmp_path: Path, runners: list[_Runner], slow: tuple[str, str], how: str
) -> None:
    """A regex that backtracks for ever on one line: the stop (SIGTERM, Ctrl-C, MaxRuntimeInSeconds)
    still ends the job, Stopped; the runner names the regex as too slow; the other definition still
    reads its value from the lines after (the twin: a sane regex is unaffected)."""
    regex, line = slow
    body = _script(
        tmp_path,
        f"trap 'exit 0' TERM; echo '{line}'; echo 'loss=0.5'; touch /opt/ml/model/printed; {WAIT}",
        StoppingCondition={"MaxRuntimeInSeconds": 5 if how == "MaxRuntime" else 300},
    )
    body["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "slow", "Regex": regex},
        {"Name": "loss", "Regex": r"loss=([0-9.]+)"},
    ]
    runner = _Runner(tmp_path, body, "--kill-after", "60")
    runners.append(runner)
    if how != "MaxRuntime":
        printed = tmp_path / "work" / "hosts" / "algo-1" / "opt_ml" / "model" / "printed"
        sleep_until(printed.exists, timeout=60, what="the job's lines in the pipe")
        runner.process.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
    _out, err, code = runner.finish()
    assert code == 3, err
    result = described(tmp_path)
    expected = "MaxRuntimeExceeded" if how == "MaxRuntime" else "Stopped"
    assert (result["TrainingJobStatus"], result["SecondaryStatus"]) == ("Stopped", expected)
    slow_events = [e for e in _events(err) if e.get("event") == "metric_regex_too_slow"]
    assert [(e["metric"], e["regex"]) for e in slow_events] == [("slow", regex)], err
    final = {m["MetricName"]: m["Value"] for m in result.get("FinalMetricDataList", [])}
    assert final == {"loss": 0.5}


@pytest.mark.parametrize(("regex", "line"), SLOW)
def test_the_extractor_drops_a_slow_regex_and_keeps_the_others(regex: str, line: str) -> None:
    """Searched in a matcher process with a time bound: the slow definition is reported once and not
    searched again; a definition before it and one after it still give their values."""
    from smsupervise.local.metrics import Extractor

    extractor = Extractor(
        (_metric("before", r"loss=([0-9.]+)"), _metric("slow", regex), _metric("after", r"acc=([0-9.]+)")),
        budget=0.2,
    )
    try:
        found = extractor.scan(f"{line} loss=0.5 acc=0.25", "algo-1", "stdout", 1.0)
        assert [s.name for s in extractor.slow] == ["slow"]
        assert sorted((s.name, s.value) for s in found) == [("after", 0.25), ("before", 0.5)]
        again = extractor.scan(f"{line} loss=1 acc=2", "algo-1", "stdout", 2.0)
        assert sorted((s.name, s.value) for s in again) == [("after", 2.0), ("before", 1.0)]
        assert [s.name for s in extractor.slow] == ["slow"]  # reported once
    finally:
        extractor.close()


NESTED = ["({c}+)+$", "({c}|{c}{c})+$", "({c}*)*{d}", "({c}+{c}+)+{d}", "(({c}+)*)*$"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(NESTED),
    c=st.sampled_from("abcxyz019"),
    d=st.sampled_from("!#%"),
    length=st.integers(min_value=40, max_value=2000),
    before=st.booleans(),
)
def test_any_nested_repetition_is_cut_short_and_the_rest_still_read(
    shape: str, c: str, d: str, length: int, before: bool
) -> None:
    """The class: nested repetitions of any character, on a run of it of any length, with the slow
    definition before or after a sane one: the line gets its answer, the sane value is in it, the
    slow one is named."""
    from smsupervise.local.metrics import Extractor

    slow, sane = _metric("slow", shape.format(c=c, d=d)), _metric("loss", "loss=([0-9.]+)")
    extractor = Extractor((slow, sane) if before else (sane, slow), budget=0.1)
    try:
        found = extractor.scan(f"loss=0.5 {c * length}?", "algo-1", "stdout", 1.0)
        assert [(s.name, s.value) for s in found] == [("loss", 0.5)]
        assert extractor.slow == [slow]
        again = extractor.scan(f"loss=0.25 {c * length}?", "algo-1", "stdout", 2.0)
        assert [(s.name, s.value) for s in again] == [("loss", 0.25)]
    finally:
        extractor.close()


def test_the_extractor_reads_every_value_of_sane_regexes() -> None:
    """The twin: nothing is slow, every definition's first group is read, in order, none dropped."""
    from smsupervise.local.metrics import Extractor

    extractor = Extractor((_metric("loss", "loss=(.*?);"), _metric("acc", "acc=([0-9.]+)")), budget=0.2)
    try:
        for step in range(50):
            found = extractor.scan(f"loss={step};acc=0.{step}", "algo-1", "stderr", float(step))
            assert [(s.name, s.value) for s in found] == [("loss", step), ("acc", float(f"0.{step}"))]
        assert extractor.slow == []
        assert [(s.name, s.value) for s in extractor.final()] == [("loss", 49.0), ("acc", 0.49)]
    finally:
        extractor.close()


def _metric(name: str, regex: str) -> Any:
    from smsupervise.local.job import Metric

    return Metric(name, regex)


# --- a line without end -----------------------------------------------------------------------------

LINE = 200 * 1024 * 1024 + 12345  # not a whole number of parts


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@needs_root
@pytest.mark.parametrize("end", ["none", "carriage-returns"])
def test_a_huge_line_without_newline_is_read_in_bounded_parts(
    tmp_path: Path, runners: list[_Runner], end: str
) -> None:
    """200 MiB without a newline (or a tqdm bar: only carriage returns): the runner's peak RSS stays
    far below the line; the line is kept in parts that join back to every byte, each marked as
    smsupervise marks them (``partial``: id, n from 1, last); the next line is a line of its own."""
    fill = (
        f"head -c {LINE} /dev/zero | tr '\\0' a"
        if end == "none"
        else f"yes a | head -c {LINE} | tr '\\n' '\\r'"
    )
    body = _script(tmp_path, f"trap 'exit 0' TERM; {fill}; echo; echo ready; {WAIT}")
    runner = _Runner(tmp_path, body, "--quiet")
    runners.append(runner)
    log = tmp_path / "work" / "logs" / "algo-1.jsonl"
    sleep_until(lambda: _logged(log, "ready"), timeout=120, interval=0.1, what="ready")
    peak = _peak_rss(runner.process.pid)
    runner.process.send_signal(signal.SIGTERM)
    _out, err, code = runner.finish()
    assert code == 3, err
    assert peak < 64 * 1024 * 1024, f"peak RSS {peak >> 20} MiB for a {LINE >> 20} MiB line"
    parts = [r for r in _records(log) if r.get("stream") == "stdout" and r.get("msg") != "ready"]
    assert sum(len(r["msg"]) for r in parts) == LINE  # (an odd LINE: it ends "a", then the newline)
    assert len(parts) > 1
    assert [r["partial"]["n"] for r in parts] == list(range(1, len(parts) + 1))
    assert [r["partial"]["last"] for r in parts] == [False] * (len(parts) - 1) + [True]
    assert len({r["partial"]["id"] for r in parts}) == 1


@needs_root
def test_ordinary_lines_are_not_marked_as_parts(tmp_path: Path) -> None:
    """The twin: lines of any ordinary length are records of their own, without ``partial``."""
    result = run(tmp_path, _script(tmp_path, "echo short; head -c 100000 /dev/zero | tr '\\0' b; echo"))
    assert result.returncode == 0, result.stderr
    lines = [r for r in _records(tmp_path / "work" / "logs" / "algo-1.jsonl") if r.get("stream") == "stdout"]
    assert [len(r["msg"]) for r in lines] == [5, 100000]
    assert all("partial" not in r for r in lines)


# --- special files among the checkpoints --------------------------------------------------------------

SPECIALS = """
d=/opt/ml/checkpoints; mkdir -p $d
echo one > $d/first.ckpt
mkfifo $d/fifo
python3 -c "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" $d/socket
ln -s /nowhere $d/dangling
ln -s /dev/zero $d/zeros
ln -s loop $d/loop
mknod $d/null c 1 3
echo linked > /opt/ml/linked-target; ln -s ../linked-target $d/link.ckpt
"""
SPECIAL_NAMES = ["dangling", "fifo", "loop", "null", "socket", "zeros"]


@needs_root
def test_special_files_among_checkpoints_are_skipped_named_and_the_rest_is_mirrored(tmp_path: Path) -> None:
    """A FIFO, a socket, a device, links to a device, to nowhere and to themselves in the checkpoint
    dir (and a FIFO in the location copied in): each is named in a ``checkpoint_skipped`` event, once;
    every regular file written before and after them is mirrored (a link to a regular file is copied:
    the twin), the job is Completed."""
    location = tmp_path / "checkpoints"
    location.mkdir()
    (location / "earlier.ckpt").write_text("earlier")
    os.mkfifo(location / "stale-fifo")
    script = (
        f'set -e; test "$(cat /opt/ml/checkpoints/earlier.ckpt)" = earlier; {SPECIALS}'
        "echo two > $d/second.ckpt"
    )
    body = _script(
        tmp_path, script, CheckpointConfig={"S3Uri": f"file://{location}", "LocalPath": "/opt/ml/checkpoints"}
    )
    result = run(tmp_path, body, "--json", "--checkpoint-interval", "0.05")
    assert result.returncode == 0, result.stderr
    assert described(tmp_path)["TrainingJobStatus"] == "Completed"
    assert sorted(p.name for p in location.iterdir()) == sorted(
        ["earlier.ckpt", "stale-fifo", "first.ckpt", "second.ckpt", "link.ckpt"]
    )
    assert (location / "second.ckpt").read_text() == "two\n"
    assert (location / "link.ckpt").read_text() == "linked\n"
    skipped = [e for e in _events(result.stderr) if e.get("event") == "checkpoint_skipped"]
    assert sorted(e["file"] for e in skipped) == sorted([*SPECIAL_NAMES, "stale-fifo"])


def _special(kind: str, path: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    elif kind == "device":
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero
    elif kind == "dangling":
        path.symlink_to("/nowhere")
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "to-a-fifo":
        os.mkfifo(str(path) + "-target")
        path.symlink_to(path.name + "-target")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "dangling", "loop", "to-a-fifo"])
def test_a_mirror_pass_skips_each_kind_of_special_file(tmp_path: Path, kind: str) -> None:
    """One pass over a dir holding a special file among regular ones: the regular ones are copied,
    the special one is in ``skipped`` with its kind, and the pass ends (no FIFO open blocks it)."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "sub").mkdir(parents=True)
    (local / "a.ckpt").write_text("a")
    _special(kind, local / "sub" / "special")
    (local / "z.ckpt").write_text("z")
    mirror = checkpoints.Mirror(str(local), checkpoints.location(str(remote)))
    mirror.sync()
    assert (remote / "a.ckpt").read_text() == "a"
    assert (remote / "z.ckpt").read_text() == "z"
    assert not (remote / "sub" / "special").exists()
    assert "sub/special" in mirror.skipped
    assert mirror.problems == {}


def test_a_deep_checkpoint_dir_is_mirrored(tmp_path: Path) -> None:
    """1500 directories deep (deeper than Python's recursion limit): the file at the bottom is
    mirrored, not a RecursionError that stops the mirror."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    deep = os.path.join(str(local), *(["d"] * 1500))
    subprocess.run(["mkdir", "-p", deep], check=True)  # os.makedirs recurses
    Path(deep, "bottom.ckpt").write_text("bottom")
    try:
        checkpoints.Mirror(str(local), checkpoints.location(str(remote))).sync()
        assert Path(str(remote), *(["d"] * 1500), "bottom.ckpt").read_text() == "bottom"
    finally:
        subprocess.run(["rm", "-rf", str(local), str(remote)], check=True)


# --- every exit path ends in a final status ---------------------------------------------------------


def _in_small_tmpfs(mount: Path, size: str, argv: list[str]) -> list[str]:
    """``argv`` in a private mount namespace where ``mount`` is a tmpfs of ``size``; what it holds
    at the end, then describe.json (read from inside: the mount dies with the namespace), are
    printed after the lines ``--files--`` and ``--describe--``."""
    mount.mkdir(exist_ok=True)
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; m="$2"; shift 2; "$@"; rc=$?; '
        'echo --files--; find "$m" -type f; echo --describe--; cat "$D/describe.json" 2>/dev/null; exit $rc'
    )
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        size,
        str(mount),
        *argv,
    ]


@needs_root
def test_disk_full_while_uploading_fails_the_job_with_a_reason(tmp_path: Path) -> None:
    """S3OutputPath on a 1 MiB filesystem and a 4 MB model: ENOSPC while packing. The job is Failed
    with a FailureReason naming the error and the stage; no half archive is left."""
    out = tmp_path / "small"
    body = _script(tmp_path, "head -c 4000000 /dev/urandom > /opt/ml/model/weights.bin")
    body["OutputDataConfig"]["S3OutputPath"] = f"file://{out}"
    argv = _in_small_tmpfs(out, "1m", run_args(tmp_path, body, "--json"))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Failed", "Failed")
    assert "Uploading" in body["FailureReason"]
    assert "No space left on device" in body["FailureReason"]
    files = result.stdout.partition("--files--\n")[2].partition("--describe--")[0].split()
    assert files == [], files


@needs_root
def test_disk_full_in_the_work_dir_still_ends_in_a_final_status(tmp_path: Path) -> None:
    """The work dir on a 2 MiB filesystem and a job that writes 4 MB of output lines: the log cannot
    be kept (named in an event, once), the job is not held (its pipe is still drained) and
    describe.json still says how it ended, Completed (space was kept aside for it)."""
    work = tmp_path / "work"
    script = "yes 'a line of output, long enough to fill a small disk quickly enough' | head -n 60000"
    body = _script(tmp_path, script, StoppingCondition={"MaxRuntimeInSeconds": 60})
    argv = run_args(tmp_path, body, "--json", "--kill-after", "5")
    result = subprocess.run(
        _in_small_tmpfs(work, "2m", argv),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "D": str(work)},
    )
    _before, _sep, describe = result.stdout.partition("--describe--\n")
    assert describe, result.stderr
    body = orjson.loads(describe)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Completed", "Completed"), (
        body.get("FailureReason"),
        result.stderr[-1500:],
    )
    assert result.returncode == 0, result.stderr
    not_kept = [e for e in _events(result.stderr) if e.get("event") == "log_not_kept"]
    streams = [(e["host"], e["stream"]) for e in not_kept]
    assert ("algo-1", "stdout") in streams, result.stderr
    assert len(streams) == len(set(streams))  # once per stream, not once per line
    assert all("No space left on device" in e["error"] for e in not_kept)
    skipped = [e["status"] for e in _events(result.stderr) if e.get("event") == "describe_not_written"]
    assert skipped == ["Uploading"], result.stderr  # the reserve was kept for the final status


@needs_root
def test_an_error_while_starting_ends_failed_with_a_reason(tmp_path: Path) -> None:
    """Two hosts whose network namespaces cannot be made (a name ``ip`` refuses): Failed at once,
    the reason names the command; no host ran."""
    body = _script(tmp_path, "echo ran > /opt/ml/model/ran", count=2)
    path = tmp_path / "job.json"
    path.write_bytes(orjson.dumps(body))
    argv = [*LOCAL, "run", str(path), "--work-dir", str(tmp_path / "work"), "--netns-prefix", "bad/"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 1, result.stderr
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Failed", "Failed")
    assert "ip netns add" in body["FailureReason"]
    assert "Starting" in body["FailureReason"]
    assert not (tmp_path / "work" / "hosts" / "algo-1" / "opt_ml" / "model" / "ran").exists()


@needs_root
def test_more_hosts_than_the_network_holds_is_a_client_error_at_once(tmp_path: Path) -> None:
    """InstanceCount 300 as root (each host is 10.200.0.K/24): Failed with a ClientError naming the
    field and the limit, before any namespace is made (none with this test's prefix exists)."""
    result = run(tmp_path, _script(tmp_path, "true", count=300))
    assert result.returncode == 1, result.stderr
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Failed", "Failed")
    assert body["FailureReason"].startswith("ClientError: ResourceConfig.InstanceCount 300")
    assert "254" in body["FailureReason"]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert netns_prefix() not in listed


@needs_root
def test_a_1500_deep_model_dir_is_packed(tmp_path: Path) -> None:
    """The twin of the error paths: a model dir 1500 levels deep (deeper than Python's recursion
    limit) is not an error: Completed, and the bottom file is in model.tar.gz."""
    script = (
        "d=/opt/ml/model; i=0; while [ $i -lt 1500 ]; do d=$d/d; i=$((i+1)); done; mkdir -p $d; echo x > $d/f"
    )
    try:
        result = run(tmp_path, _script(tmp_path, script))
        assert result.returncode == 0, result.stderr
        body = described(tmp_path)
        assert body["TrainingJobStatus"] == "Completed"
        with tarfile.open(tmp_path / "out" / "probe-script" / "output" / "model.tar.gz") as archive:
            assert "/".join(["d"] * 1500 + ["f"]) in archive.getnames()
    finally:
        subprocess.run(["rm", "-rf", str(tmp_path / "work")], check=False)


@needs_root
def test_a_missing_input_is_still_a_client_error(tmp_path: Path) -> None:
    """The twin: the error path that already ended Failed keeps its ClientError reason."""
    body = _script(tmp_path, "true")
    body["InputDataConfig"] = [
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"file://{tmp_path}/nothing-here",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
    ]
    result = run(tmp_path, body)
    assert result.returncode == 1, result.stderr
    assert described(tmp_path)["FailureReason"].startswith("ClientError: ")


# --- Ctrl-C while Uploading ---------------------------------------------------------------------------


def _sparse_model(size: str) -> str:
    return f"truncate -s {size} /opt/ml/model/big.bin"


@needs_root
def test_two_ctrl_c_while_uploading_end_the_runner_at_once(tmp_path: Path, runners: list[_Runner]) -> None:
    """A 64 GiB (sparse) model takes minutes to pack: Ctrl-C twice while Uploading ends the runner
    now; the job is Stopped, and no model (nor a half archive) is at ModelArtifacts (describe.json
    names where it would be, as DescribeTrainingJob always does) or anywhere in the output path."""
    runner = _Runner(tmp_path, _script(tmp_path, _sparse_model("64G")))
    runners.append(runner)
    sleep_until(lambda: _status(tmp_path) == "Uploading", timeout=60, what="Uploading")
    runner.process.send_signal(signal.SIGINT)
    runner.wait_event("stop_while_uploading")  # two signals at once may merge into one
    runner.process.send_signal(signal.SIGINT)
    _out, err, code = runner.finish(timeout=60)
    assert code == 3, err
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "Stopped")
    expected = body["ModelArtifacts"]["S3ModelArtifacts"]
    assert not Path(expected.removeprefix("file://")).exists(), expected
    assert "upload" in body["SecondaryStatusTransitions"][-1]["StatusMessage"].lower()
    output = tmp_path / "out" / "probe-script" / "output"
    assert not output.exists() or sorted(p.name for p in output.iterdir()) == []


@needs_root
def test_one_ctrl_c_while_uploading_lets_the_upload_finish(tmp_path: Path, runners: list[_Runner]) -> None:
    """The twin: one Ctrl-C while Uploading is noted, the model is still saved, and the job says it
    was Stopped (a stop was asked for), with its ModelArtifacts."""
    runner = _Runner(tmp_path, _script(tmp_path, _sparse_model("1G")))
    runners.append(runner)
    sleep_until(lambda: _status(tmp_path) == "Uploading", timeout=60, what="Uploading")
    runner.process.send_signal(signal.SIGINT)
    _out, err, code = runner.finish(timeout=300)
    assert code == 3, err
    assert any(e.get("event") == "stop_while_uploading" for e in _events(err)), err
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert body["ModelArtifacts"]["S3ModelArtifacts"].endswith("model.tar.gz")
    assert (tmp_path / "out" / "probe-script" / "output" / "model.tar.gz").exists()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@needs_root
def test_a_runner_killed_while_uploading_leaves_no_upload_behind(
    tmp_path: Path, runners: list[_Runner]
) -> None:
    """SIGKILL to the runner while Uploading (nothing can be caught): its upload process dies with it
    and the work dir's lock goes with them (the next run may take it)."""
    runner = _Runner(tmp_path, _script(tmp_path, _sparse_model("64G")))
    runners.append(runner)
    sleep_until(lambda: _status(tmp_path) == "Uploading", timeout=60, what="Uploading")
    upload = sleep_until(lambda: _children(runner.process.pid), timeout=60, what="the upload process")[0]
    runner.kill()
    sleep_until(lambda: not Path(f"/proc/{upload}").exists(), timeout=60, what="the upload's end")
    from smsupervise.local.workdir import lock

    os.close(lock(str(tmp_path / "work")))  # free: no WorkDirBusy


@needs_root
def test_a_runner_killed_while_training_leaves_no_host_behind(tmp_path: Path, runners: list[_Runner]) -> None:
    """SIGKILL to the runner while its job runs: the host's launcher and PID 1 die with it (nothing
    of the job is left running, nobody would ever stop it). The twins are every other test here: a
    runner that lives keeps its hosts running until it stops them."""
    runner = _Runner(tmp_path, _script(tmp_path, f"trap 'exit 0' TERM; echo ready; {WAIT}"))
    runners.append(runner)
    sleep_until(
        lambda: _logged(tmp_path / "work" / "logs" / "algo-1.jsonl", "ready"), timeout=60, what="ready"
    )
    launcher = _children(runner.process.pid)[0]
    pid1 = _children(launcher)[0]
    runner.kill()
    for pid in (launcher, pid1):
        sleep_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=60, what=f"{pid}'s end")


# --- one run per work dir -----------------------------------------------------------------------------


@needs_root
def test_a_second_run_on_a_busy_work_dir_is_refused(tmp_path: Path, runners: list[_Runner]) -> None:
    """While a run holds the work dir, another one on it is refused (exit 2) naming the first run's
    pid, and touches nothing; once the first is gone, the dir is no longer called busy (the twin)."""
    first = _Runner(tmp_path, _script(tmp_path, f"trap 'exit 0' TERM; echo ready; {WAIT}"))
    runners.append(first)
    log = tmp_path / "work" / "logs" / "algo-1.jsonl"
    sleep_until(lambda: _logged(log, "ready"), timeout=60, what="ready")
    before = (tmp_path / "work" / "describe.json").read_bytes()
    second = run(tmp_path, _script(tmp_path, "echo second > /opt/ml/model/second", name="second"))
    assert second.returncode == 2, second.stderr
    assert f"pid {first.process.pid}" in second.stderr
    assert "--work-dir" in second.stderr
    assert (tmp_path / "work" / "describe.json").read_bytes() == before
    first.process.send_signal(signal.SIGTERM)
    _out, err, code = first.finish()
    assert code == 3, err
    again = run(tmp_path, _script(tmp_path, "true", name="again"))
    # free now: not refused as busy (as root a used work dir is refused for what it holds:
    # docs/security.md; the lock's own twin is the next test)
    assert "in use by another smsupervise-local run" not in again.stderr


def test_a_lock_left_by_a_killed_run_is_free(tmp_path: Path) -> None:
    """A run SIGKILLed while it held the lock: the kernel released it, the next run may go on; a
    lock held by a live process is refused naming it."""
    work = tmp_path / "work"
    holder = subprocess.Popen(
        [
            *LOCAL[:1],
            "-c",
            "import sys, time; from smsupervise.local.workdir import lock; lock(sys.argv[1]);"
            " print('locked', flush=True); time.sleep(1000)",
            str(work),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        from smsupervise.local.workdir import WorkDirBusy, lock

        with pytest.raises(WorkDirBusy, match=f"pid {holder.pid}"):
            lock(str(work))
    finally:
        holder.kill()
        holder.wait()
    os.close(lock(str(work)))
    shutil.rmtree(work)
