"""The mesh's trust: a key that each host of one job derives on its own from what only the job's
containers receive, and the MACs made with it (HMAC-SHA256).

The key is SHA-256 over: the job name, the sorted host names, the job's hyperparameters (``SM_HPS``,
decoded from ``/opt/ml/input/config/hyperparameters.json``, in a canonical form), and
``SMSUPERVISE_MESH_SECRET`` when the platform (smsupervise-local does, a random one per run) or the
user sets it. Nothing else of a host differs, so every host of the job gets the same key.

What it keeps out: a process that knows the job name and the hosts (anyone who can see the job or
reach a host's address, of any uid) but cannot read the job's config or environment. What it does
not: whoever can read ``/opt/ml/input/config`` inside a job container or DescribeTrainingJob's
hyperparameters can derive the key when no secret is set (set SMSUPERVISE_MESH_SECRET to a random
value in the job's Environment to narrow that to whoever can read the job's environment).

Each incoming connection starts with a fresh nonce from the acceptor; the connector answers with a
hello MAC'd over it, and every later line carries a MAC over the nonce, its sequence number and its
bytes: nothing can be replayed from another connection, reordered, or injected into one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

import orjson

SECRET_VARIABLE = "SMSUPERVISE_MESH_SECRET"  # noqa: S105 - its name, not a secret
MAC_HEX = 64  # hex digits of an HMAC-SHA256
NONCE_BYTES = 16


def derive(env: Mapping[str, str], job: str, hosts: Sequence[str]) -> bytes:
    """The job's mesh key, from the job's environment (as the supervisor builds it for the job)."""
    hyperparameters = env.get("SM_HPS", "{}")
    try:
        canonical = orjson.dumps(orjson.loads(hyperparameters), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = hyperparameters.encode("utf-8", "surrogateescape")
    material = orjson.dumps(
        {
            "v": 1,
            "job": job,
            "hosts": sorted(hosts),
            "hyperparameters": canonical.decode("utf-8", "replace"),
            "secret": env.get(SECRET_VARIABLE, ""),
        }
    )
    return hashlib.sha256(b"smsupervise-mesh\0" + material).digest()


def _mac(key: bytes, *parts: bytes) -> str:
    code = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        code.update(len(part).to_bytes(8, "big"))
        code.update(part)
    return code.hexdigest()


def hello_mac(key: bytes, nonce: bytes, host: str, job: str) -> str:
    """What a connector puts in its hello: proof it has the key, bound to this connection's nonce."""
    return _mac(key, b"hello", nonce, host.encode(), job.encode())


def hello_ok(key: bytes, nonce: bytes, host: str, job: str, mac: str) -> bool:
    return hmac.compare_digest(hello_mac(key, nonce, host, job), mac)


def sign(key: bytes, nonce: bytes, seq: int, body: bytes) -> bytes:
    """One line on the wire: the MAC (64 hex digits), a space, the body, a newline."""
    return _mac(key, b"line", nonce, seq.to_bytes(8, "big"), body).encode() + b" " + body + b"\n"


def verify(key: bytes, nonce: bytes, seq: int, line: bytes) -> bytes | None:
    """The body of a signed line, or None when its MAC is not right for this key, nonce and seq."""
    line = line.rstrip(b"\n")
    if len(line) < MAC_HEX + 1 or line[MAC_HEX : MAC_HEX + 1] != b" ":
        return None
    mac, body = line[:MAC_HEX], line[MAC_HEX + 1 :]
    expected = _mac(key, b"line", nonce, seq.to_bytes(8, "big"), body).encode()
    return body if hmac.compare_digest(expected, mac) else None
