"""A CreateTrainingJob request (JSON, as boto3 and ``aws sagemaker create-training-job`` take it)
turned into a typed, frozen record, after the checks the API makes. Every problem names the JSON
path, the rule and the fix; all problems are reported at once and nothing runs.

Two layers: the API's own rules, from botocore's SageMaker service model (``apimodel``: members at
every depth, required members, lengths and counts, ranges, enums, patterns; the ``local`` extra),
then smsupervise-local's rules on top (what the runner needs, what it refuses: ``REFUSED``). S3 URI
fields also take ``file://`` URIs and local paths here. A field the API accepts but the runner does
not act on is a ``Notice`` (``IGNORED``: said once, with why), never silently dropped. Without
botocore only the local rules run, and a notice says so. docs/local-api-fields.md is the table.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from smsupervise.local import apimodel

MAX_RUNTIME_LIMIT = 28 * 24 * 3600  # StoppingCondition.MaxRuntimeInSeconds: 1 s .. 28 days
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9\.\-_]+$")
ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
INPUT_MODES = ("File", "Pipe", "FastFile")
KNOWN_FIELDS = frozenset(
    [
        "TrainingJobName",
        "HyperParameters",
        "AlgorithmSpecification",
        "RoleArn",
        "InputDataConfig",
        "OutputDataConfig",
        "ResourceConfig",
        "VpcConfig",
        "StoppingCondition",
        "Tags",
        "EnableNetworkIsolation",
        "EnableInterContainerTrafficEncryption",
        "EnableManagedSpotTraining",
        "CheckpointConfig",
        "DebugHookConfig",
        "DebugRuleConfigurations",
        "TensorBoardOutputConfig",
        "ExperimentConfig",
        "ProfilerConfig",
        "ProfilerRuleConfigurations",
        "Environment",
        "RetryStrategy",
        "RemoteDebugConfig",
        "InfraCheckConfig",
        "SessionChainingConfig",
    ]
)


# Fields the API accepts and the runner cannot honour: refused, with the rule and the fix. A path's
# "[]" stands for every item of a list.
REFUSED = {
    "InputDataConfig[].DataSource.FileSystemDataSource": (
        "EFS and FSx file systems are not mounted by smsupervise-local",
        "mount it on this machine and give its directory as DataSource.S3DataSource.S3Uri (a path or file://)",
    ),
    "InputDataConfig[].DataSource.DatasetSource": (
        "dataset sources are not read by smsupervise-local",
        "export the data to a directory or an S3 prefix and use DataSource.S3DataSource",
    ),
    "InputDataConfig[].DataSource.S3DataSource.InstanceGroupNames": (
        "instance groups are not supported by smsupervise-local",
        "remove it (every host gets every channel)",
    ),
    "ResourceConfig.InstanceGroups": (
        "heterogeneous clusters (instance groups) are not supported by smsupervise-local",
        "use ResourceConfig.InstanceType and ResourceConfig.InstanceCount",
    ),
    "AlgorithmSpecification.AlgorithmName": (
        "SageMaker and Marketplace algorithms are not available to smsupervise-local",
        "give the algorithm's image as AlgorithmSpecification.TrainingImage",
    ),
    "ServerlessJobConfig": (
        "serverless training jobs are not supported by smsupervise-local",
        "give AlgorithmSpecification and ResourceConfig instead",
    ),
}
# Fields the API accepts and the runner does not act on, each said once (a ``field_ignored``
# notice) with why. Booleans only when true.
IGNORED = {
    "RoleArn": "no IAM here: the job runs with this machine's credentials",
    "VpcConfig": "the hosts use this machine's network (several hosts: their own lc- namespaces)",
    "EnableNetworkIsolation": "not enforced: a host can reach what this machine reaches",
    "EnableInterContainerTrafficEncryption": "the hosts' traffic never leaves this machine",
    "EnableManagedSpotTraining": "no spot capacity here: the job starts at once and is never interrupted",
    "StoppingCondition.MaxWaitTimeInSeconds": "no spot capacity to wait for",
    "StoppingCondition.MaxPendingTimeInSeconds": "no capacity to wait for: the job starts at once",
    "OutputDataConfig.KmsKeyId": "no KMS here: artifacts are written as they are",
    "ResourceConfig.VolumeKmsKeyId": "no KMS here: the hosts' trees are on this machine's disk",
    "ResourceConfig.KeepAlivePeriodInSeconds": "no warm pools here",
    "ResourceConfig.TrainingPlanArn": "no capacity reservations here",
    "ResourceConfig.InstancePlacementConfig": "every host is on this machine",
    "ResourceConfig.InstancePreferences": "every host is on this machine",
    "AlgorithmSpecification.TrainingImageConfig": "smsupervise-local pulls no image from a registry",
    "AlgorithmSpecification.EnableSageMakerMetricsTimeSeries": "metrics go to metrics.jsonl only",
    "InputDataConfig[].ShuffleConfig": "Pipe channels stream their objects in key order, unshuffled",
    "InputDataConfig[].DataSource.S3DataSource.AttributeNames": "read from augmented manifests only",
    "ResourceConfig.SelectedInstanceType": "every host is on this machine",
    "ResourceConfig.SelectedInstanceCount": "InstanceCount is the number of hosts",
    "InputDataConfig[].DataSource.S3DataSource.ModelAccessConfig": "no model access gate here",
    "InputDataConfig[].DataSource.S3DataSource.HubAccessConfig": "no SageMaker hub here",
    "Tags": "nothing is tagged here",
    "ExperimentConfig": "no SageMaker Experiments here",
    "MlflowConfig": "no managed MLflow here",
    "ModelPackageConfig": "no model registry here",
    "DebugHookConfig": "no SageMaker Debugger here (echoed in describe.json)",
    "DebugRuleConfigurations": "no SageMaker Debugger rules here (echoed in describe.json)",
    "ProfilerConfig": "no SageMaker Profiler here (echoed in describe.json)",
    "ProfilerRuleConfigurations": "no SageMaker Profiler rules here (echoed in describe.json)",
    "RetryStrategy": "a failed job is not retried",
    "RemoteDebugConfig": "no remote access through SSM (smsupervise-debug attaches to a host locally)",
    "InfraCheckConfig": "no instance health checks here",
    "SessionChainingConfig": "no session chaining here",
}
# Members whose S3 URIs may also be file:// URIs or local paths here (the API's pattern is s3/https).
LOCAL_URIS = ("S3Uri", "S3OutputPath")
# The SDK's local mode's instance types, which the API's enum does not have: taken here.
LOCAL_INSTANCE_TYPES = ("local", "local_gpu")


@dataclass(frozen=True, slots=True)
class Notice:
    """A field the runner does not act on (``field_ignored``), or the API's checks not made
    (``api_model_missing``): said once when the job starts."""

    kind: str  # field_ignored | api_model_missing
    path: str
    why: str


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason the request is invalid."""

    path: str  # e.g. InputDataConfig[1].ChannelName
    rule: str
    fix: str

    def render(self, source: str) -> str:
        """``JOB.json: InputDataConfig[1].ChannelName: <rule>; <fix>``."""
        return f"{source}: {self.path}: {self.rule}; {self.fix}"


class InvalidRequest(Exception):
    """The request breaks one or more of the API's rules; ``problems`` lists them all."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


@dataclass(frozen=True, slots=True)
class Metric:
    """One MetricDefinitions entry."""

    name: str
    regex: str


@dataclass(frozen=True, slots=True)
class Channel:
    """One InputDataConfig channel."""

    name: str
    uri: str
    data_type: str  # S3Prefix | ManifestFile | AugmentedManifestFile
    distribution: str  # FullyReplicated | ShardedByS3Key
    input_mode: str  # the channel's own mode, else the job's
    content_type: str | None
    compression: str  # None | Gzip
    record_wrapper: str  # None | RecordIO


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """CheckpointConfig."""

    uri: str
    local_path: str


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """A validated CreateTrainingJob request; ``request`` is the JSON as given (echoed by describe)."""

    name: str
    image: str | None
    input_mode: str
    entrypoint: tuple[str, ...]
    arguments: tuple[str, ...]
    metrics: tuple[Metric, ...]
    hyperparameters: Mapping[str, str]
    channels: tuple[Channel, ...]
    output_path: str
    instance_type: str
    instance_count: int
    max_runtime: int
    checkpoint: Checkpoint | None
    environment: Mapping[str, str]
    request: Mapping[str, Any]
    output_compression: str = "GZIP"  # OutputDataConfig.CompressionType: GZIP | NONE
    notices: tuple[Notice, ...] = ()
    tensorboard: Checkpoint | None = None  # TensorBoardOutputConfig: LocalPath mirrored to uri


class _Checker:
    """Collects problems while walking the request."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, rule: str, fix: str) -> None:
        self.problems.append(Problem(path, rule, fix))

    def obj(self, value: Any, path: str, required: bool = True) -> dict[str, Any]:
        if value is None:
            if required:
                self.add(path, "is required", f"add {path.rsplit('.', 1)[-1]} (see CreateTrainingJob)")
            return {}
        if not isinstance(value, dict):
            self.add(path, f"must be an object, not {type(value).__name__}", "write it as {...}")
            return {}
        return value

    def string(
        self, parent: dict[str, Any], key: str, path: str, *, required: bool = False, limit: int = 0
    ) -> str | None:
        where = f"{path}.{key}" if path else key
        value = parent.get(key)
        if value is None:
            if required:
                self.add(where, "is required", f"add {key}")
            return None
        if not isinstance(value, str):
            self.add(where, f"must be a string, not {type(value).__name__}", 'quote it: "..."')
            return None
        if required and not value:
            self.add(where, "must not be empty", f"give {key} a value")
        if limit and len(value) > limit:
            self.add(where, f"is {len(value)} characters, more than the {limit} allowed", "shorten it")
        return value

    def choice(
        self, parent: dict[str, Any], key: str, path: str, options: tuple[str, ...], default: str
    ) -> str:
        value = self.string(parent, key, path)
        if value is None:
            return default
        if value not in options:
            where = f"{path}.{key}" if path else key
            self.add(where, f"{value!r} is not one of {list(options)}", f"use one of {', '.join(options)}")
        return value

    def string_map(
        self, value: Any, path: str, limits: tuple[int, int, int], key_re: re.Pattern[str] | None
    ) -> dict[str, str]:
        entries, key_limit, value_limit = limits
        mapping = self.obj(value, path, required=False)
        if len(mapping) > entries:
            self.add(path, f"has {len(mapping)} entries, more than the {entries} allowed", "drop some")
        for key, item in mapping.items():
            where = f"{path}.{key}"
            if len(key) > key_limit:
                self.add(where, f"the key is longer than {key_limit} characters", "shorten the key")
            if key_re is not None and not key_re.fullmatch(key):
                self.add(where, f"the key does not match {key_re.pattern}", "use letters, digits and _")
            if not isinstance(item, str):
                self.add(where, f"must be a string, not {type(item).__name__}", 'quote the value: "..."')
            elif len(item) > value_limit:
                self.add(
                    where, f"is {len(item)} characters, more than the {value_limit} allowed", "shorten it"
                )
        return {k: v for k, v in mapping.items() if isinstance(v, str)}

    def strings(self, value: Any, path: str, limit: int) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(path, "must be a list of strings", 'write it as ["...", "..."]')
            return ()
        if not 1 <= len(value) <= 100:
            self.add(path, f"has {len(value)} items; 1 to 100 are allowed", "drop the list or shorten it")
        for i, item in enumerate(value):
            if len(item) > limit:
                self.add(f"{path}[{i}]", f"is longer than {limit} characters", "shorten it")
        return tuple(value)


def _algorithm(c: _Checker, request: dict[str, Any]) -> tuple[str | None, str, tuple[Metric, ...]]:
    path = "AlgorithmSpecification"
    spec = c.obj(request.get(path), path)
    image = c.string(spec, "TrainingImage", path, limit=255)
    mode = c.choice(spec, "TrainingInputMode", path, INPUT_MODES, "File")
    if spec and "TrainingInputMode" not in spec:
        c.add(f"{path}.TrainingInputMode", "is required", "add File, Pipe or FastFile")
    definitions = spec.get("MetricDefinitions") or []
    if not isinstance(definitions, list):
        c.add(f"{path}.MetricDefinitions", "must be a list", 'write [{"Name": ..., "Regex": ...}]')
        definitions = []
    if len(definitions) > 40:
        c.add(f"{path}.MetricDefinitions", f"has {len(definitions)} entries, more than 40", "drop some")
    metrics = []
    for i, item in enumerate(definitions):
        where = f"{path}.MetricDefinitions[{i}]"
        entry = c.obj(item, where)
        name = c.string(entry, "Name", where, required=True, limit=255)
        regex = c.string(entry, "Regex", where, required=True, limit=500)
        if regex:
            try:
                re.compile(regex)
            except re.error as error:
                c.add(f"{where}.Regex", f"is not a Python regular expression ({error})", "fix the pattern")
                continue
        if name and regex:
            metrics.append(Metric(name, regex))
    return image, mode, tuple(metrics)


def _channel(c: _Checker, item: Any, where: str, job_mode: str) -> Channel | None:
    entry = c.obj(item, where)
    name = c.string(entry, "ChannelName", where, required=True, limit=64)
    if name and not CHANNEL_NAME.fullmatch(name):  # fullmatch: "$" would let a trailing newline in
        c.add(
            f"{where}.ChannelName",
            f"{name!r} does not match {CHANNEL_NAME.pattern}",
            "use letters, digits, '.', '-' and '_'",
        )
    source = c.obj(entry.get("DataSource"), f"{where}.DataSource")
    other = any(key in source for key in ("FileSystemDataSource", "DatasetSource"))  # refused apart
    s3 = c.obj(source.get("S3DataSource"), f"{where}.DataSource.S3DataSource", not other) if source else {}
    spath = f"{where}.DataSource.S3DataSource"
    uri = c.string(s3, "S3Uri", spath, required=bool(s3), limit=1024)
    data_type = c.choice(
        s3, "S3DataType", spath, ("S3Prefix", "ManifestFile", "AugmentedManifestFile"), "S3Prefix"
    )
    if s3 and "S3DataType" not in s3:
        c.add(f"{spath}.S3DataType", "is required", "add S3Prefix")
    if data_type != "S3Prefix":
        c.add(f"{spath}.S3DataType", f"{data_type} is not supported by smsupervise-local", "use S3Prefix")
    distribution = c.choice(
        s3, "S3DataDistributionType", spath, ("FullyReplicated", "ShardedByS3Key"), "FullyReplicated"
    )
    mode = c.choice(entry, "InputMode", where, INPUT_MODES, job_mode)
    compression = c.choice(entry, "CompressionType", where, ("None", "Gzip"), "None")
    wrapper = c.choice(entry, "RecordWrapperType", where, ("None", "RecordIO"), "None")
    if compression == "Gzip" and mode != "Pipe":
        c.add(f"{where}.CompressionType", "Gzip is only supported in Pipe mode", "use Pipe mode or None")
    content_type = c.string(entry, "ContentType", where, limit=256)
    if not (name and uri):
        return None
    return Channel(name, uri, data_type, distribution, mode, content_type, compression, wrapper)


def _channels(c: _Checker, request: dict[str, Any], job_mode: str) -> tuple[Channel, ...]:
    value = request.get("InputDataConfig") or []
    if not isinstance(value, list):
        c.add("InputDataConfig", "must be a list of channels", 'write [{"ChannelName": ...}]')
        return ()
    if len(value) > 20:
        c.add("InputDataConfig", f"has {len(value)} channels, more than 20", "merge some")
    channels = [
        ch for i, item in enumerate(value) if (ch := _channel(c, item, f"InputDataConfig[{i}]", job_mode))
    ]
    seen: set[str] = set()
    for i, ch in enumerate(channels):
        if ch.name in seen:
            c.add(f"InputDataConfig[{i}].ChannelName", f"{ch.name!r} is used twice", "rename one channel")
        seen.add(ch.name)
    return tuple(channels)


def _resources(c: _Checker, request: dict[str, Any]) -> tuple[str, int, int]:
    resources = c.obj(request.get("ResourceConfig"), "ResourceConfig")
    instance_type = c.string(resources, "InstanceType", "ResourceConfig", required=bool(resources)) or ""
    count = resources.get("InstanceCount", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        c.add("ResourceConfig.InstanceCount", f"{count!r} is not a whole number >= 1", "use 1 or more")
        count = 1
    volume = resources.get("VolumeSizeInGB")
    if resources and (not isinstance(volume, int) or isinstance(volume, bool) or volume < 1):
        c.add("ResourceConfig.VolumeSizeInGB", f"{volume!r} is not a whole number >= 1", "add e.g. 30")
    stopping = c.obj(request.get("StoppingCondition"), "StoppingCondition")
    runtime = stopping.get("MaxRuntimeInSeconds", 86400)
    if not isinstance(runtime, int) or isinstance(runtime, bool) or not 1 <= runtime <= MAX_RUNTIME_LIMIT:
        c.add(
            "StoppingCondition.MaxRuntimeInSeconds",
            f"{runtime!r} is not between 1 and {MAX_RUNTIME_LIMIT}",
            "use 1 s to 28 days (2419200)",
        )
        runtime = 1
    return instance_type, count, runtime


def _checkpoint(c: _Checker, request: dict[str, Any]) -> Checkpoint | None:
    config = c.obj(request.get("CheckpointConfig"), "CheckpointConfig", required=False)
    if not config:
        return None
    uri = c.string(config, "S3Uri", "CheckpointConfig", required=True, limit=1024)
    given = c.string(config, "LocalPath", "CheckpointConfig", limit=4096) or "/opt/ml/checkpoints/"
    local = checkpoint_path(given)
    if local is None:
        real = posixpath.normpath("/" + given.lstrip("/")) if given.startswith("/") else given
        c.add(
            "CheckpointConfig.LocalPath",
            f"{given!r} (that is {real!r}) is outside /opt/ml (not supported by smsupervise-local), "
            "or in /opt/ml/input (the channels and the config are put there)",
            "use a path under /opt/ml, e.g. /opt/ml/checkpoints",
        )
    return Checkpoint(uri, local) if uri and local is not None else None


def checkpoint_path(given: str) -> str | None:
    """LocalPath in its normal form (``//`` collapsed, ``.`` and ``..`` resolved, no trailing
    ``/``) when it is strictly below /opt/ml and outside /opt/ml/input; else None. Lexical only:
    in the host's tree, made by the runner, the only links and mounts are those of /opt/ml/input."""
    if not given.startswith("/"):
        return None
    normal = posixpath.normpath("/" + given.lstrip("/"))  # normpath keeps a leading "//"
    parts = normal.split("/")[1:]
    if parts[:2] != ["opt", "ml"] or len(parts) < 3 or parts[2] == "input":
        return None
    return normal


def _tensorboard(c: _Checker, request: dict[str, Any], name: str) -> Checkpoint | None:
    """TensorBoardOutputConfig as a location to mirror LocalPath to: ``<S3OutputPath>/<job>/
    tensorboard-output`` (the prefix jobs on the service write to; the API reference names only
    S3OutputPath)."""
    where = "TensorBoardOutputConfig"
    config = c.obj(request.get(where), where, required=False)
    if not config:
        return None
    uri = c.string(config, "S3OutputPath", where, required=True, limit=1024)
    local = c.string(config, "LocalPath", where, limit=4096) or "/opt/ml/output/tensorboard"
    if not (local.rstrip("/") + "/").startswith("/opt/ml/"):
        c.add(
            f"{where}.LocalPath",
            f"{local!r} is outside /opt/ml (not supported by smsupervise-local)",
            "use a path under /opt/ml, e.g. /opt/ml/output/tensorboard",
        )
    return Checkpoint(f"{uri.rstrip('/')}/{name}/tensorboard-output", local) if uri else None


def _present(value: Any, pattern: str, path: str = "") -> list[tuple[str, Any]]:
    """(JSON path, value) of every member of ``value`` that ``pattern`` (``A[].B``) names."""
    if not pattern:
        return [(path, value)]
    head, _, rest = pattern.partition(".")
    key, many = (head[:-2], True) if head.endswith("[]") else (head, False)
    if not isinstance(value, dict) or value.get(key) is None:
        return []
    where = f"{path}.{key}" if path else key
    if not many:
        return _present(value[key], rest, where)
    items = value[key] if isinstance(value[key], list) else []
    return [found for i, item in enumerate(items) for found in _present(item, rest, f"{where}[{i}]")]


def _at(value: Any, path: str) -> Any:
    """The value at a concrete JSON path (``A[0].B``), or None."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            value = value[index] if isinstance(value, list) and index < len(value) else None
        else:
            value = value.get(part) if isinstance(value, dict) else None
    return value


def _local_uri(value: Any) -> bool:
    """A ``file://`` URI or a local path (which the API's s3/https pattern would refuse)."""
    return isinstance(value, str) and (value.startswith("file://") or "://" not in value)


def _api(request: dict[str, Any]) -> tuple[list[Problem], list[Notice]]:
    """The API's rules (botocore's model), local URIs allowed; or, without botocore, the top-level
    member names this module knows and a notice."""
    shape = apimodel.input_shape("CreateTrainingJob")
    if shape is None:
        unknown = [
            Problem(key, "is not a CreateTrainingJob field", "remove it or check its spelling")
            for key in sorted(set(request) - KNOWN_FIELDS)
        ]
        why = "botocore is not installed: the API's own rules were not checked"
        why += " (pip install 'smsupervise[local]')"
        return unknown, [Notice("api_model_missing", "$", why)]
    problems = []
    for found in apimodel.check(request, shape):
        if (
            found.kind == "pattern"
            and found.path.endswith(LOCAL_URIS)
            and _local_uri(_at(request, found.path))
        ):
            continue
        local_type = found.path.endswith("InstanceType") and _at(request, found.path) in LOCAL_INSTANCE_TYPES
        if found.kind == "enum" and local_type:
            continue
        problems.append(Problem(found.path, found.rule, found.fix))
    return problems, []


def validate(request: Any, source: str = "JOB.json") -> TrainingJob:
    """Check a decoded request as CreateTrainingJob does, then the local rules, and return the
    typed job (with its notices).

    Raises:
        InvalidRequest: with every problem found (JSON path, rule, fix).
    """
    c = _Checker()
    request = c.obj(request, "$")
    api_problems, notices = _api(request) if request else ([], [])
    for pattern, (rule, fix) in REFUSED.items():
        for path, _value in _present(request, pattern):
            c.add(path, rule, fix)
    for pattern, why in IGNORED.items():
        notices += [Notice("field_ignored", path, why) for path, value in _present(request, pattern) if value]
    name = c.string(request, "TrainingJobName", "", required=True) or ""
    if name and not JOB_NAME.fullmatch(name):
        c.add(
            "TrainingJobName",
            f"{name!r} does not match {JOB_NAME.pattern}",
            "use 1 to 63 letters, digits and hyphens, starting with a letter or digit",
        )
    image, mode, metrics = _algorithm(c, request)
    spec = request.get("AlgorithmSpecification") or {}
    entrypoint = c.strings(spec.get("ContainerEntrypoint"), "AlgorithmSpecification.ContainerEntrypoint", 256)
    arguments = c.strings(spec.get("ContainerArguments"), "AlgorithmSpecification.ContainerArguments", 256)
    hyperparameters = c.string_map(request.get("HyperParameters"), "HyperParameters", (100, 256, 2500), None)
    environment = c.string_map(request.get("Environment"), "Environment", (100, 512, 512), ENV_KEY)
    channels = _channels(c, request, mode)
    output = c.obj(request.get("OutputDataConfig"), "OutputDataConfig")
    given = "OutputDataConfig" in request  # else one problem: OutputDataConfig is required
    output_path = c.string(output, "S3OutputPath", "OutputDataConfig", required=given, limit=1024)
    output_compression = c.choice(output, "CompressionType", "OutputDataConfig", ("GZIP", "NONE"), "GZIP")
    instance_type, count, runtime = _resources(c, request)
    checkpoint = _checkpoint(c, request)
    tensorboard = _tensorboard(c, request, name)
    problems = _merged(request, c.problems, api_problems)
    if problems:
        raise InvalidRequest(source, problems)
    return TrainingJob(
        name,
        image,
        mode,
        entrypoint,
        arguments,
        metrics,
        hyperparameters,
        channels,
        output_path or "",
        instance_type,
        count,
        runtime,
        checkpoint,
        environment,
        request,
        output_compression,
        tuple(notices),
        tensorboard,
    )


def _merged(request: dict[str, Any], local: list[Problem], api: list[Problem]) -> list[Problem]:
    """The local rules' problems, and the API's on paths the local rules did not name (their
    wording is the more specific), in the request's order of top-level members."""
    named = {p.path for p in local}
    order = {key: i for i, key in enumerate(request)}

    def place(problem: Problem) -> int:
        top = re.match(r"[^.\[]*", problem.path)
        return order.get(top.group(0) if top else "", len(order))

    return sorted([*local, *(p for p in api if p.path not in named)], key=place)


def load(path: str) -> TrainingJob:
    """Read and validate a request file.

    Raises:
        InvalidRequest: unreadable, not JSON, or breaking the API's rules.
    """
    try:
        with open(path, "rb") as handle:
            decoded = orjson.loads(handle.read())
    except OSError as error:
        raise InvalidRequest(
            path, [Problem("$", f"cannot be read ({error.strerror})", "check the path")]
        ) from None
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(path, [Problem("$", f"is not JSON ({error})", "fix the syntax")]) from None
    return validate(decoded, path)
