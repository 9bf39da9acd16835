"""``s3://`` for the local runner, with boto3 (``pip install 'smsupervise[s3]'``), imported only when
an ``s3://`` URI is used. Not exercised by the test suite (no network there).
"""

from __future__ import annotations

import os
from typing import Any


def _client() -> Any:
    try:
        import boto3  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise RuntimeError("s3:// URIs need boto3: pip install 'smsupervise[s3]'") from None
    return boto3.client("s3")


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def download_prefix(uri: str, dest: str) -> str:
    """Download every object under the prefix into ``dest`` (once per job); returns ``dest``."""
    if os.path.isdir(dest):
        return dest
    client, (bucket, prefix) = _client(), split(uri)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = (
                os.path.relpath(item["Key"], prefix) if item["Key"] != prefix else os.path.basename(prefix)
            )
            target = os.path.join(dest, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            client.download_file(bucket, item["Key"], target)
    os.makedirs(dest, exist_ok=True)
    return dest


def upload(path: str, uri: str) -> None:
    """Upload one file to ``uri``."""
    bucket, key = split(uri)
    _client().upload_file(path, bucket, key)


def delete(uri: str) -> None:
    """Delete one object."""
    bucket, key = split(uri)
    _client().delete_object(Bucket=bucket, Key=key)
