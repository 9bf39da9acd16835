"""``s3://`` for the local runner, with boto3 (``pip install 'smsupervise[s3]'``), imported only when
an ``s3://`` URI is used. boto3 finds the endpoint (``AWS_ENDPOINT_URL``, boto3 >= 1.28), region and
credentials as usual; tests/local/test_s3.py runs against a stand-in endpoint (tests/s3server.py).

Every failure is an ``S3Error`` (a ``ValueError``: the runner fails the job with a ClientError, as
the service does for an input it cannot read) naming the URI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any


class S3Error(ValueError):
    """An s3:// location that could not be used: names the URI, the cause and the fix."""


def _client() -> Any:
    try:
        import boto3  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise S3Error("s3:// URIs need boto3: pip install 'smsupervise[s3]'") from None
    return boto3.client("s3")


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _failed(uri: str, what: str, error: Exception) -> S3Error:
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    cause = f"{code}: {error}" if code else str(error)
    return S3Error(f"{uri}: could not {what} ({cause}); check the bucket, the key and the credentials")


def _calling(uri: str, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``; a boto3/botocore error becomes an ``S3Error`` naming ``uri``."""
    import boto3.exceptions  # noqa: PLC0415 (optional dependency)
    import botocore.exceptions  # noqa: PLC0415 (comes with boto3)

    errors = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error)
    try:
        return call(*args, **kwargs)
    except errors as error:  # the transfer manager's S3UploadFailedError is a Boto3Error
        raise _failed(uri, what, error) from None


def relative_name(key: str, prefix: str) -> str | None:
    """Where object ``key`` lands under the channel dir, for an S3Prefix ``prefix``: the key without
    the whole prefix, as a string, and without the ``/`` that then leads (``data/train`` +
    ``data/train/a`` -> ``a``; ``data/train`` + ``data/train2/a`` -> ``2/a``), as the SDK's local
    mode does; the prefix as a whole key -> its basename. None for a key that would not stay inside
    (``..``, ``.``, empty parts) or that does not start with the prefix."""
    if not key.startswith(prefix):
        return None
    name = key[len(prefix) :].lstrip("/") if key != prefix else key.rsplit("/", 1)[-1]
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts):
        return None
    return name


def list_keys(uri: str) -> list[tuple[str, int]]:
    """Every (key, size) under the prefix, in key order (ListObjectsV2, every page)."""
    client, (bucket, prefix) = _client(), split(uri)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    found = []
    for page in _calling(uri, "list the objects", list, pages):
        found += [(item["Key"], int(item["Size"])) for item in page.get("Contents", [])]
    return found


class Stopped(Exception):
    """A stop request came while objects were being downloaded (the message says where)."""


def _never() -> bool:
    return False


def download_into(uri: str, dest: str, should_stop: Callable[[], bool] = _never) -> int:
    """Every object under the prefix into ``dest`` (made if missing), merged with what is there;
    returns how many. ``should_stop`` is asked before each object. Raises ``S3Error``, ``Stopped``."""
    client, (bucket, prefix) = _client(), split(uri)
    count = 0
    for key, _size in list_keys(uri):
        if should_stop():
            raise Stopped(f"while downloading {uri} ({count} objects in)")
        name = relative_name(key, prefix)
        if name is None or key.endswith("/"):
            continue  # a "folder" marker, or a key that would land outside the channel
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _calling(f"s3://{bucket}/{key}", "download it", client.download_file, bucket, key, target)
        count += 1
    os.makedirs(dest, exist_ok=True)
    return count


def download_prefix(uri: str, dest: str, should_stop: Callable[[], bool] = _never) -> str:
    """Download every object under the prefix into ``dest`` once per job, all or nothing (into
    ``dest.part``, renamed when complete); returns ``dest``.

    Raises:
        S3Error: boto3 missing, a request refused, or no object under the prefix (as the service).
        Stopped: ``should_stop`` said so between two objects (nothing is left behind).
    """
    if os.path.isdir(dest):
        return dest
    partial = dest + ".part"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if download_into(uri, partial, should_stop) == 0:
            raise S3Error(f"{uri}: no objects under this prefix; fix the S3Uri or upload the data")
        os.rename(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest


def upload(path: str, uri: str) -> None:
    """Upload one file to ``uri`` (multipart when large, as boto3 chooses)."""
    bucket, key = split(uri)
    client = _client()
    _calling(uri, "upload it", client.upload_file, path, bucket, key)


def delete(uri: str) -> None:
    """Delete one object."""
    bucket, key = split(uri)
    client = _client()
    _calling(uri, "delete it", client.delete_object, Bucket=bucket, Key=key)
