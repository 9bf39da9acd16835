"""An ``s3://`` source downloaded with boto3 (the optional ``s3`` extra), interruptible and all or nothing.

The object is streamed in 1 MiB reads into ``<target>.part`` (the caller puts ``target`` beside
the code dir: same filesystem, no copy through /tmp) and renamed to ``target`` only once every byte
is in; the stop is asked between reads. A read that gets no byte for ``STALL`` seconds gives up
(botocore's ``read_timeout``): the stop is asked again, and if there is none the download resumes
where it was with a ranged GET of the same object (``If-Match`` its ETag), so a stalled connection
never holds a stop longer than ``STALL`` seconds and never fails a download by itself. The endpoint,
region and credentials are boto3's (``AWS_ENDPOINT_URL``, or ``S3_ENDPOINT_URL`` here).
"""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any

from smsupervise.errors import ConfigError
from smsupervise.sagemaker.unpack import CHUNK, FIELD, Job, Stopped, limit_error

STALL = 10.0  # seconds without a byte before a read gives up, the stop is asked and the download resumes
RESUMES = 5  # resumes in a row without a byte gained before the download fails


def _client(uri: str, where: str) -> Any:
    try:
        import boto3  # noqa: PLC0415 - the optional s3 extra
        import botocore.config  # noqa: PLC0415 - comes with boto3
    except ImportError:
        raise ConfigError(
            where,
            FIELD,
            f"{uri} is on S3 but boto3 is not installed",
            "install smsupervise[s3] in the image, or put the code in <base>/code",
        ) from None
    endpoint = os.environ.get("S3_ENDPOINT_URL")  # else boto3 reads AWS_ENDPOINT_URL(_S3) itself
    region = os.environ.get("AWS_REGION") or os.environ.get("SAGEMAKER_REGION")
    config = botocore.config.Config(connect_timeout=STALL, read_timeout=STALL)
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _failed(uri: str, job: Job, why: str) -> ConfigError:
    return ConfigError(
        job.where,
        FIELD,
        f"{uri} could not be downloaded ({why}); nothing was unpacked",
        "check the bucket, the key and the credentials (the SDK uploads <job>/source/sourcedir.tar.gz)",
    )


class _Progress:
    """How far one download got: bytes written, the object's size and ETag once known."""

    def __init__(self) -> None:
        self.got = 0
        self.size: int | None = None
        self.etag: str | None = None

    def done(self) -> bool:
        return self.size is not None and self.got >= self.size


def _stream(client: Any, uri: str, out: IO[bytes], progress: _Progress, job: Job) -> None:
    """One GET (ranged from ``progress.got`` when resuming) into ``out``, a stop check per read."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    extra = {"Range": f"bytes={progress.got}-", "IfMatch": progress.etag or "*"} if progress.got else {}
    response = client.get_object(Bucket=bucket, Key=key, **extra)
    body = response["Body"]
    if progress.size is None:
        progress.size, progress.etag = int(response.get("ContentLength") or 0), response.get("ETag")
    try:
        while not progress.done():
            if job.should_stop():
                raise Stopped(f"while downloading {uri} at {progress.got} of {progress.size} bytes")
            chunk = body.read(CHUNK)
            if not chunk:
                raise ConnectionError("the connection ended early")  # resumed by the caller
            if progress.got + len(chunk) > job.limits.max_bytes:
                raise limit_error(job, f"{job.limits.max_bytes} bytes (--source-max-bytes)")
            out.write(chunk)
            progress.got += len(chunk)
    finally:
        body.close()


def download(uri: str, job: Job, target: str) -> None:
    """``uri`` into ``target``, all or nothing; raises ``ConfigError`` (naming ``uri``) or ``Stopped``."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ConfigError(job.where, FIELD, f"{uri!r} is not s3://bucket/key", "name the source's object")
    client = _client(uri, job.where)
    import botocore.exceptions  # noqa: PLC0415 - comes with boto3

    broken = (
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ResponseStreamingError,
        botocore.exceptions.IncompleteReadError,
        botocore.exceptions.ConnectionError,
        ConnectionError,
    )
    partial, progress, stalls = target + ".part", _Progress(), 0
    try:
        with open(partial, "xb") as out:
            while not progress.done():
                before = progress.got
                try:
                    _stream(client, uri, out, progress, job)
                except broken as error:
                    if job.should_stop():
                        raise Stopped(
                            f"while downloading {uri} at {progress.got} of {progress.size} bytes"
                        ) from None
                    stalls = 0 if progress.got > before else stalls + 1
                    if stalls > RESUMES:
                        raise _failed(uri, job, f"{RESUMES} resumes in a row got no byte: {error}") from None
    except botocore.exceptions.ClientError as error:  # NoSuchKey, AccessDenied, PreconditionFailed, ...
        code = error.response.get("Error", {}).get("Code") or "?"
        raise _failed(uri, job, f"{code}: {error}") from None
    except botocore.exceptions.BotoCoreError as error:  # no credentials, no endpoint, ...
        raise _failed(uri, job, str(error)) from None
    except OSError as error:  # e.g. ENOSPC
        raise _failed(uri, job, f"{partial}: {error.strerror}") from None
    finally:
        if not progress.done():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    os.rename(partial, target)
