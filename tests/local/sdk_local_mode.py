"""Run by the SageMaker SDK's own venv (``make sdk``), never imported by the test suite.

Builds an ``Estimator`` in local mode, lets ``fit`` go through the SDK's local client as far as the
container, and there, instead of Docker, calls the SDK's own ``write_config_files`` for every host.
Writes ``captured.json`` (the CreateTrainingJob request the SDK built, and its host names) and the
SDK's config files under ``OUT/sdk/<host>/input/config``.

    python sdk_local_mode.py OUT DATA INSTANCE_COUNT
"""

import json
import os
import sys

from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.local import image, local_session
from sagemaker.telemetry import telemetry_logging


def main() -> None:
    out, data, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    captured: dict[str, object] = {}
    create = local_session.LocalSagemakerClient.create_training_job

    def create_training_job(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        captured["request"] = kwargs
        return create(self, *args, **kwargs)

    def train(self, input_data_config, output_data_config, hyperparameters, environment, job_name):  # type: ignore[no-untyped-def]  # noqa: PLR0917
        self.container_root = os.path.join(out, "sdk")
        for host in self.hosts:
            os.makedirs(os.path.join(self.container_root, host, "input", "config"), exist_ok=True)
            self.write_config_files(host, hyperparameters, input_data_config)
        captured["hosts"] = self.hosts
        return os.path.join(out, "model")

    local_session.LocalSagemakerClient.create_training_job = create_training_job
    image._SageMakerContainer.train = train
    image._SageMakerContainer._get_compose_cmd_prefix = staticmethod(lambda: ["docker", "compose"])
    telemetry_logging._requests_helper = lambda *_args, **_kwargs: None
    session = local_session.LocalSession()
    estimator = Estimator(
        image_uri="local-image",
        role="arn:aws:iam::000000000000:role/local",
        instance_count=count,
        instance_type="local",
        hyperparameters={"epochs": 3, "lr": 0.05, "optimizer": "sgd"},
        output_path=f"file://{out}/artifacts",
        sagemaker_session=session,
        base_job_name="sdk-compare",
    )
    estimator.fit(
        {
            "train": TrainingInput(f"file://{data}/train", content_type="text/csv"),
            "validation": f"file://{data}/val",
        },
        logs=False,
    )
    with open(os.path.join(out, "captured.json"), "w") as handle:
        json.dump(captured, handle)


if __name__ == "__main__":
    main()
