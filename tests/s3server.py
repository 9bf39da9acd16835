"""A stand-in S3 endpoint for the tests: stdlib ``http.server``, threaded, path-style, in memory.

It speaks the subset boto3 uses here: HeadBucket, CreateBucket, HeadObject, GetObject (with
``Range``), PutObject (plain or ``aws-chunked``), the multipart upload calls, ListObjectsV2
(prefix, max-keys, continuation), DeleteObject and DeleteObjects. ``throttle`` (bytes per second)
makes GetObject bodies slow, for the tests that stop a download midway; ``stall_after`` makes the
next one stop sending (the connection open) until ``released``. No authentication is
checked; point boto3 at it with ``env`` (AWS_ENDPOINT_URL and dummy credentials).
"""

from __future__ import annotations

import hashlib
import http.server
import itertools
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from xml.etree import ElementTree as ET

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
SLICE = 16 << 10  # bytes per write of a throttled body


@dataclass
class Store:
    """The buckets (name -> key -> bytes), the open multipart uploads, the throttle and a log."""

    buckets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    uploads: dict[str, tuple[str, str, dict[int, bytes]]] = field(default_factory=dict)
    throttle: float = 0.0  # bytes per second of a GetObject body; 0: as fast as possible
    stall_after: int | None = None  # the next unranged GetObject sends this many bytes, then nothing
    released: threading.Event = field(default_factory=threading.Event)  # ends every stall (teardown)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range), in order
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=itertools.count)


def _xml(root: str, children: list[ET.Element] | None = None, **texts: str) -> bytes:
    element = ET.Element(root) if root == "Error" else ET.Element(root, xmlns=NS)  # as S3 writes them
    for name, text in texts.items():
        ET.SubElement(element, name).text = text
    element.extend(children or [])
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(element)


def _parse(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 - XML from the test's own boto3 client


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'  # noqa: S324 - S3's ETag, not security


def _dechunk(body: bytes) -> bytes:
    """An ``aws-chunked`` body (``<hex size>[;sig]\\r\\n<data>\\r\\n`` ... ``0``, trailers) unwrapped."""
    out, at = bytearray(), 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection; ``server.store`` holds the state (see ``Server``)."""

    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``store.requests`` instead."""

    # -- plumbing ----------------------------------------------------------------------------------

    def _parts(self) -> tuple[str, str, dict[str, str]]:
        url = urllib.parse.urlsplit(self.path)
        bucket, _, key = urllib.parse.unquote(url.path).lstrip("/").partition("/")
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        with self.server.store.lock:
            self.server.store.requests.append((self.command, url.path, self.headers.get("Range") or ""))
        return bucket, key, query

    def _body(self) -> bytes:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunked = "aws-chunked" in (self.headers.get("Content-Encoding") or "")
        if chunked or (self.headers.get("x-amz-content-sha256") or "").startswith("STREAMING-"):
            return _dechunk(data)
        return data

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, _xml("Error", Code=code, Message=message), {"Content-Type": "application/xml"})

    def _objects(self, bucket: str) -> dict[str, bytes] | None:
        found = self.server.store.buckets.get(bucket)
        if found is None:
            self._error(404, "NoSuchBucket", f"The specified bucket does not exist: {bucket}")
        return found

    # -- verbs -------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        """HeadBucket and HeadObject."""
        bucket, key, _ = self._parts()
        objects = self._objects(bucket)
        if objects is None or not key:
            if objects is not None:
                self._send(200)
            return
        if key not in objects:
            self._error(404, "NoSuchKey", key)
            return
        self._head(200, objects[key], len(objects[key]))

    def _head(self, status: int, data: bytes, length: int, extra: dict[str, str] | None = None) -> None:
        """The status line and an object's headers; ``length``: the bytes of body that follow."""
        self.send_response(status)
        self.send_header("ETag", _etag(data))
        self.send_header("Last-Modified", formatdate(usegmt=True))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "binary/octet-stream")
        self.send_header("Content-Length", str(length))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def do_GET(self) -> None:
        """GetObject (with Range) and ListObjectsV2."""
        bucket, key, query = self._parts()
        objects = self._objects(bucket)
        if objects is None:
            return
        if not key:
            self._list(bucket, objects, query)
            return
        if key not in objects:
            self._error(404, "NoSuchKey", f"The specified key does not exist: {key}")
            return
        data = objects[key]
        start, end, status = 0, len(data) - 1, 200
        if ranged := self.headers.get("Range"):
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(int(last), len(data) - 1) if first and last else end
            status = 206
        body = data[start : end + 1]
        extra = {"Content-Range": f"bytes {start}-{end}/{len(data)}"} if status == 206 else {}
        self._head(status, data, len(body), extra)
        self._write_body(body)

    def _write_body(self, body: bytes) -> None:
        store = self.server.store
        if store.stall_after is not None and not self.headers.get("Range"):
            with store.lock:
                stall, store.stall_after = store.stall_after, None  # once
            self.wfile.write(body[:stall])
            self.wfile.flush()
            store.released.wait()  # a stalled server: the connection stays open, no byte comes
            self.close_connection = True
            return
        rate = store.throttle
        if not rate:
            self.wfile.write(body)
            return
        started = time.monotonic()
        for at in range(0, len(body), SLICE):
            self.wfile.write(body[at : at + SLICE])
            self.wfile.flush()
            ahead = (at + SLICE) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # the throttle itself, in the server: not a test's synchronisation

    def _list(self, bucket: str, objects: dict[str, bytes], query: dict[str, str]) -> None:
        prefix = query.get("prefix", "")
        after = query.get("continuation-token") or query.get("start-after") or ""
        most = int(query.get("max-keys", "1000"))
        keys = sorted(k for k in objects if k.startswith(prefix) and k > after)
        page, more = keys[:most], len(keys) > most
        contents = []
        for name in page:
            item = ET.Element("Contents")
            for tag, text in (
                ("Key", name),
                ("Size", str(len(objects[name]))),
                ("ETag", _etag(objects[name])),
                ("LastModified", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())),
                ("StorageClass", "STANDARD"),
            ):
                ET.SubElement(item, tag).text = text
            contents.append(item)
        texts = {"Name": bucket, "Prefix": prefix, "KeyCount": str(len(page)), "MaxKeys": str(most)}
        texts["IsTruncated"] = "true" if more else "false"
        if more:
            texts["NextContinuationToken"] = page[-1]
        self._send(200, _xml("ListBucketResult", contents, **texts), {"Content-Type": "application/xml"})

    def do_PUT(self) -> None:
        """CreateBucket, PutObject and UploadPart."""
        bucket, key, query = self._parts()
        body = self._body()
        store = self.server.store
        if not key:
            with store.lock:
                store.buckets.setdefault(bucket, {})
            self._send(200, headers={"Location": f"/{bucket}"})
            return
        if self._objects(bucket) is None:
            return
        if "uploadId" in query:
            upload = store.uploads.get(query["uploadId"])
            if upload is None:
                self._error(404, "NoSuchUpload", query["uploadId"])
                return
            upload[2][int(query["partNumber"])] = body
        else:
            with store.lock:
                store.buckets[bucket][key] = body
        self._send(200, headers={"ETag": _etag(body)})

    def do_POST(self) -> None:
        """CreateMultipartUpload, CompleteMultipartUpload and DeleteObjects."""
        bucket, key, query = self._parts()
        body = self._body()
        store = self.server.store
        objects = self._objects(bucket)
        if objects is None:
            return
        if "delete" in query:
            self._delete_many(bucket, objects, body)
        elif "uploads" in query:
            upload_id = f"upload-{next(store.ids)}"
            store.uploads[upload_id] = (bucket, key, {})
            xml = _xml("InitiateMultipartUploadResult", Bucket=bucket, Key=key, UploadId=upload_id)
            self._send(200, xml, {"Content-Type": "application/xml"})
        elif "uploadId" in query:
            upload = store.uploads.pop(query["uploadId"], None)
            if upload is None:
                self._error(404, "NoSuchUpload", query["uploadId"])
                return
            numbers = [int(n.text or 0) for n in _parse(body).iter(f"{{{NS}}}PartNumber")]
            data = b"".join(upload[2][n] for n in sorted(numbers))
            with store.lock:
                objects[key] = data
            xml = _xml("CompleteMultipartUploadResult", Bucket=bucket, Key=key, ETag=_etag(data))
            self._send(200, xml, {"Content-Type": "application/xml"})
        else:
            self._error(400, "InvalidRequest", f"unsupported POST {self.path}")

    def _delete_many(self, bucket: str, objects: dict[str, bytes], body: bytes) -> None:
        deleted = []
        for key_element in _parse(body).iter(f"{{{NS}}}Key"):
            with self.server.store.lock:
                objects.pop(key_element.text or "", None)
            item = ET.Element("Deleted")
            ET.SubElement(item, "Key").text = key_element.text
            deleted.append(item)
        self._send(200, _xml("DeleteResult", deleted), {"Content-Type": "application/xml"})
        del bucket

    def do_DELETE(self) -> None:
        """DeleteObject and AbortMultipartUpload."""
        bucket, key, query = self._parts()
        objects = self._objects(bucket)
        if objects is None:
            return
        if "uploadId" in query:
            self.server.store.uploads.pop(query["uploadId"], None)
        else:
            with self.server.store.lock:
                objects.pop(key, None)
        self._send(204)


class Server(http.server.ThreadingHTTPServer):
    """The endpoint; ``store`` is shared with the test, which fills and inspects it directly."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.store = Store()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this endpoint with boto3 (>= 1.28 reads AWS_ENDPOINT_URL)."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def put(self, uri: str, data: bytes) -> None:
        """An object at ``s3://bucket/key``, its bucket made if needed."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        with self.store.lock:
            self.store.buckets.setdefault(bucket, {})[key] = data

    def get(self, uri: str) -> bytes | None:
        """The object at ``s3://bucket/key``, or None."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return self.store.buckets.get(bucket, {}).get(key)

    def keys(self, bucket: str) -> list[str]:
        return sorted(self.store.buckets.get(bucket, {}))


def serve() -> Server:
    """A running server on a free port (stop it with ``shutdown()`` and ``server_close()``)."""
    server = Server()
    threading.Thread(target=server.serve_forever, name="s3server", daemon=True).start()
    return server
