"""Run by the SageMaker SDK's own venv (``make sdk``), never imported by the test suite.

``Estimator.attach()`` (and a framework estimator's) on a job whose DescribeTrainingJob response is
DESCRIBE.json (a run's describe.json), served by botocore's Stubber, which validates every response
against the service model's output shape as botocore parses it; no network. Prints JSON: what the
attached estimators read from it, or the exception that attach() raised.

    python sdk_attach.py DESCRIBE.json
"""

import datetime
import json
import sys

import boto3
from botocore.stub import Stubber
from sagemaker.estimator import Estimator
from sagemaker.pytorch import PyTorch
from sagemaker.session import Session

TIMES = ("CreationTime", "LastModifiedTime", "TrainingStartTime", "TrainingEndTime", "StartTime", "EndTime")
TIMES += ("Timestamp",)


def _times(value):
    """ISO 8601 strings (as ``aws sagemaker describe-training-job`` prints them) as botocore parses them."""
    if isinstance(value, dict):
        return {
            k: datetime.datetime.fromisoformat(v) if k in TIMES and isinstance(v, str) else _times(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_times(v) for v in value]
    return value


def attach(cls, body):
    client = boto3.client("sagemaker", region_name="us-west-2")
    stubber = Stubber(client)
    name = body["TrainingJobName"]
    stubber.add_response("describe_training_job", body, {"TrainingJobName": name})
    stubber.add_response("list_tags", {"Tags": []}, {"ResourceArn": body["TrainingJobArn"]})
    stubber.add_response("describe_training_job", body, {"TrainingJobName": name})  # attach waits
    stubber.add_response("describe_training_job", body, {"TrainingJobName": name})  # model_data
    stubber.activate()
    session = Session(boto_session=boto3.Session(region_name="us-west-2"), sagemaker_client=client)
    try:
        estimator = cls.attach(name, sagemaker_session=session)
        return {
            "model_data": estimator.model_data,
            "output_path": estimator.output_path,
            "output_kms_key": estimator.output_kms_key,
            "instance_count": estimator.instance_count,
            "max_run": estimator.max_run,
            "input_mode": estimator.input_mode,
        }
    except Exception as error:  # reported to the test, which decides
        return {"error": f"{type(error).__name__}: {error}"}


def main() -> None:
    with open(sys.argv[1]) as handle:
        body = _times(json.load(handle))
    print(json.dumps({"Estimator": attach(Estimator, body), "PyTorch": attach(PyTorch, body)}))


if __name__ == "__main__":
    main()
