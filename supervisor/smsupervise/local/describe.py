"""``DIR/describe.json``: the job as DescribeTrainingJob would return it.

Statuses follow the service: TrainingJobStatus InProgress -> Completed | Failed | Stopped;
SecondaryStatus Starting -> Downloading -> Training -> Uploading -> Completed | Failed | Stopped |
MaxRuntimeExceeded, each transition with start/end times and a message (the service says its
messages "are subject to change"; ours are close to the ones it shows). Times are ISO 8601 in UTC,
as ``aws sagemaker describe-training-job`` prints them. The request's fields are echoed as the
service echoes them, with the defaults the service fills in (``OutputDataConfig.KmsKeyId: ""``,
``CompressionType: GZIP``, the ``Enable*`` flags false, each channel's ``CompressionType`` and
``RecordWrapperType`` "None", ...: the SDK's ``Estimator.attach()`` reads them by key), and
``ModelArtifacts`` always (a required member: where the model is, or would be); the ARN uses
account 000000000000 and region AWS_REGION or us-east-1. tests/local/test_describe_api.py checks
every state against DescribeTrainingJob's output shape in botocore's service model.
"""

from __future__ import annotations

import copy
import datetime
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from smsupervise.local.job import TrainingJob
from smsupervise.local.metrics import Sample

MESSAGES = {
    "Starting": "Preparing the instances for training",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job stopped because it ran longer than MaxRuntimeInSeconds",
}
ECHOED = [
    "HyperParameters",
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "VpcConfig",
    "StoppingCondition",
    "CheckpointConfig",
    "Environment",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "RetryStrategy",
    "DebugHookConfig",
    "DebugRuleConfigurations",
    "TensorBoardOutputConfig",
    "ExperimentConfig",
    "ProfilerConfig",
    "ProfilerRuleConfigurations",
    "RemoteDebugConfig",
    "InfraCheckConfig",
    "MlflowConfig",
    "ModelPackageConfig",
]
# What the service fills in when the request leaves it out (as DescribeTrainingJob shows it).
TOP_DEFAULTS = {
    "EnableNetworkIsolation": False,
    "EnableInterContainerTrafficEncryption": False,
    "EnableManagedSpotTraining": False,
}
OUTPUT_DEFAULTS = {"KmsKeyId": "", "CompressionType": "GZIP"}
ALGORITHM_DEFAULTS = {"EnableSageMakerMetricsTimeSeries": False}
CHANNEL_DEFAULTS = {"CompressionType": "None", "RecordWrapperType": "None"}
S3_SOURCE_DEFAULTS = {"S3DataDistributionType": "FullyReplicated"}
DEFAULT_MAX_RUNTIME = 86400
FAILURE_LIMIT = 1024


def iso(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC with microseconds."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


@dataclass
class Timeline:
    """SecondaryStatusTransitions as they happen (one writer: the runner's main thread)."""

    transitions: list[dict[str, str]] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def current(self) -> str:
        """The SecondaryStatus now."""
        return self.transitions[-1]["Status"] if self.transitions else "Starting"

    def enter(self, status: str, message: str = "") -> None:
        """End the current transition and begin ``status``."""
        now = iso(time.time())
        if self.transitions:
            self.transitions[-1]["EndTime"] = now
        self.transitions.append(
            {"Status": status, "StartTime": now, "StatusMessage": message or MESSAGES[status]}
        )

    def started(self, status: str) -> float | None:
        """When ``status`` began (epoch seconds), if it did."""
        for item in self.transitions:
            if item["Status"] == status:
                return datetime.datetime.fromisoformat(item["StartTime"]).timestamp()
        return None


def response(
    job: TrainingJob,
    timeline: Timeline,
    *,
    status: str,
    failure: str | None,
    final: list[Sample],
    model_uri: str | None,
) -> dict[str, Any]:
    """The DescribeTrainingJob response for the job in its current state."""
    region = job.environment.get("AWS_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    now = time.time()
    body: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobArn": f"arn:aws:sagemaker:{region}:000000000000:training-job/{job.name.lower()}",
        "TrainingJobStatus": status,
        "SecondaryStatus": timeline.current,
        "CreationTime": iso(timeline.created),
        "LastModifiedTime": iso(now),
        "SecondaryStatusTransitions": timeline.transitions,
    }
    body.update(echoed(job.request))
    body["ModelArtifacts"] = {"S3ModelArtifacts": model_uri or expected_model_uri(job)}
    if failure:
        body["FailureReason"] = clip(failure)
    if final:
        body["FinalMetricDataList"] = [
            {"MetricName": s.name, "Value": s.value, "Timestamp": iso(s.timestamp)} for s in final
        ]
    start = timeline.started("Training")
    if start is not None:
        body["TrainingStartTime"] = iso(start)
        if status != "InProgress":
            body["TrainingEndTime"] = iso(now)
            body["TrainingTimeInSeconds"] = body["BillableTimeInSeconds"] = max(1, round(now - start))
    return body


CUT = "\n[...]\n"
# A host's smsupervise events that say it was stopped because of another host (named in "host").
STOPPED_BY_PEER = frozenset({"peer_failed", "peer_lost", "peer_silent"})


def _stopped_by(log: str) -> str | None:
    """The host that ``log``'s host was stopped because of (its first peer_* event), if any."""
    try:
        handle = open(log, "rb")  # noqa: SIM115 (read line by line below)
    except OSError:
        return None
    with handle:
        for line in handle:
            if b'"peer_' not in line:
                continue  # most lines: no JSON decoding
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event") in STOPPED_BY_PEER:
                host = record.get("host")
                return host if isinstance(host, str) else None
    return None


def first_failed(failed: list[str], log_dir: str) -> str:
    """The host whose failure FailureReason names, of the failed hosts in exit order: the first one
    not stopped because of another (its ``log_dir/<host>.jsonl`` holds no peer_failed, peer_lost or
    peer_silent event: those name the host that failed); else the host the first victim names, if
    it failed too; else the first to exit. A victim often exits first: the host that failed may
    still be draining its output, cleaning up, or kept up by --keep-alive-on-failure."""
    named = []
    for host in failed:
        culprit = _stopped_by(os.path.join(log_dir, f"{host}.jsonl"))
        if culprit is None:
            return host
        named.append(culprit)
    return next((host for host in named if host in failed), failed[0])


def clip(reason: str, limit: int = FAILURE_LIMIT) -> str:
    """``reason`` in at most ``limit`` characters: whole when it fits, else its first lines (whole
    lines, up to half the room; the first line cut if it alone is longer) and as much of its end as
    fits, around a ``[...]`` line. The head says what happened and names the exception; the end is
    where a traceback's exception and the last stderr lines stand."""
    if len(reason) <= limit:
        return reason
    half = (limit - len(CUT)) // 2
    head = reason[:half]
    if "\n" in head:
        head = head[: head.rindex("\n")]
    return head + CUT + reason[-(limit - len(head) - len(CUT)) :]


def echoed(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request's members that DescribeTrainingJob returns, with the service's defaults filled
    in where the request left them out (a copy: the request stays as it was)."""
    body: dict[str, Any] = {key: copy.deepcopy(request[key]) for key in ECHOED if key in request}
    _fill(body, TOP_DEFAULTS)
    _fill(body.setdefault("OutputDataConfig", {}), OUTPUT_DEFAULTS)
    if isinstance(body.get("AlgorithmSpecification"), dict):
        _fill(body["AlgorithmSpecification"], ALGORITHM_DEFAULTS)
    _fill(body.setdefault("StoppingCondition", {}), {"MaxRuntimeInSeconds": DEFAULT_MAX_RUNTIME})
    for item in body.get("InputDataConfig") or []:
        _fill(item, CHANNEL_DEFAULTS)
        s3 = (item.get("DataSource") or {}).get("S3DataSource")
        if isinstance(s3, dict):
            _fill(s3, S3_SOURCE_DEFAULTS)
    return body


def _fill(target: dict[str, Any], defaults: Mapping[str, object]) -> None:
    for key, value in defaults.items():
        target.setdefault(key, value)


def expected_model_uri(job: TrainingJob) -> str:
    """Where the model is put (``<S3OutputPath>/<job>/output/model.tar.gz``; with CompressionType
    NONE the prefix ``.../output/model/``), as the service names it before the upload too."""
    leaf = "model/" if job.output_compression == "NONE" else "model.tar.gz"
    return f"{job.output_path.rstrip('/')}/{job.name}/output/{leaf}"


def write(directory: str, body: Mapping[str, Any]) -> str:
    """Write ``describe.json`` atomically; returns its path."""
    path = os.path.join(directory, "describe.json")
    with open(f"{path}.part", "wb") as handle:
        handle.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    os.replace(f"{path}.part", path)
    return path
