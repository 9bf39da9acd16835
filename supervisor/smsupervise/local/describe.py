"""``DIR/describe.json``: the job as DescribeTrainingJob would return it.

Statuses follow the service: TrainingJobStatus InProgress -> Completed | Failed | Stopped;
SecondaryStatus Starting -> Downloading -> Training -> Uploading -> Completed | Failed | Stopped |
MaxRuntimeExceeded, each transition with start/end times and a message (the service says its
messages "are subject to change"; ours are close to the ones it shows). Times are ISO 8601 in UTC,
as ``aws sagemaker describe-training-job`` prints them. The request's fields are echoed as the
service echoes them; the ARN uses account 000000000000 and region AWS_REGION or us-east-1.
"""

from __future__ import annotations

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
]
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
    body.update({key: job.request[key] for key in ECHOED if key in job.request})
    if model_uri:
        body["ModelArtifacts"] = {"S3ModelArtifacts": model_uri}
    if failure:
        body["FailureReason"] = failure[:FAILURE_LIMIT]
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


def write(directory: str, body: Mapping[str, Any]) -> str:
    """Write ``describe.json`` atomically; returns its path."""
    path = os.path.join(directory, "describe.json")
    with open(f"{path}.part", "wb") as handle:
        handle.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    os.replace(f"{path}.part", path)
    return path
