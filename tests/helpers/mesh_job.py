"""The training script of the mesh's hostile tests, the same file on every host (as SageMaker
ships one): algo-1 (and, with --role wait, every host) trains until a marker file appears in its
/opt/ml/input and then exits with the code the marker holds; algo-2 with --role forge-* is a
process inside algo-2's container that speaks to algo-1's mesh itself:

* ``forge-nokey``: it knows the job's name and its host's name, not the key: hello with a wrong
  MAC (or, against a mesh that sends no challenge, the old unauthenticated hello), then a 'failed'
  report; it ends when algo-1 closes the connection.
* ``forge-nosecret``: as ``forge-nokey``, with a key derived from everything in its container but
  the mesh secret (SMSUPERVISE_MESH_SECRET) that algo-1 was given.
* ``forge-junk``: it has the key (derived from its own environment, as any process of the job's
  container can): a proven hello, reports of wrong types, beats; when ``send-valid`` appears in its
  /opt/ml/input, one valid 'failed' report; it ends when algo-1 closes the connection.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

INPUT = "/opt/ml/input"
JUNK = [
    {"headline": 5},
    {"exit_code": "one"},
    {"at": {"nested": [1, {"deeper": None}]}},
    {"rank": [3], "local_rank": "x"},
    {"tail": {"a": 1}, "extra": True},
]


def wait_for(name: str) -> str:
    path = os.path.join(INPUT, name)
    while not os.path.exists(path):
        time.sleep(0.05)
    with open(path) as handle:
        return handle.read().strip()


def report(**fields: object) -> bytes:
    body = {"kind": "failed", "host": "algo-2", "exit_code": 1, "headline": "forged", "at": time.time()}
    return json.dumps({**body, "rank": 5, "local_rank": 1, "tail": "", **fields}).encode()


def forge(role: str) -> None:
    job = os.environ["TRAINING_JOB_NAME"]
    sock = socket.create_connection((socket.gethostbyname("algo-1"), 7778))
    sock.settimeout(3)
    try:
        first = sock.recv(4096)
    except TimeoutError:
        first = b""  # a mesh without a challenge (before the key)
    sock.settimeout(None)
    hello: dict[str, str] = {"kind": "hello", "host": "algo-2", "job": job}
    lines: list[bytes] = []
    if first:
        from smsupervise.distributed import meshkey

        nonce = bytes.fromhex(json.loads(first)["nonce"])
        hosts = json.loads(os.environ["SM_HOSTS"])
        key = os.urandom(32) if role == "forge-nokey" else meshkey.derive(os.environ, job, hosts)
        hello["mac"] = meshkey.hello_mac(key, nonce, "algo-2", job)
        seq = 0

        def signed(body: bytes) -> bytes:
            nonlocal seq
            seq += 1
            return meshkey.sign(key, nonce, seq - 1, body)
    else:

        def signed(body: bytes) -> bytes:
            return body + b"\n"

    sock.sendall(json.dumps(hello).encode() + b"\n")
    if role in ("forge-nokey", "forge-nosecret"):
        lines.append(signed(report()))
    else:
        lines += [signed(report(**junk)) for junk in JUNK]
    sock.sendall(b"".join(lines))
    print(f"{role}: sent {len(lines)}", flush=True)
    if role == "forge-junk":
        while not os.path.exists(os.path.join(INPUT, "send-valid")):
            sock.sendall(signed(b'{"kind":"beat"}'))
            time.sleep(0.5)
        sock.sendall(signed(report(headline="Training exited with code 1")))
        print("forge-junk: sent the valid report", flush=True)
    sock.settimeout(120)
    try:
        while sock.recv(4096):
            pass  # until algo-1 closes
    except ConnectionResetError:  # closed with our lines unread: the kernel says so with a reset
        pass
    print(f"{role}: closed by algo-1", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="wait")
    args, _ = parser.parse_known_args()
    host = os.environ.get("SM_CURRENT_HOST", "")
    if host == "algo-2" and args.role.startswith("forge"):
        forge(args.role)
        return 0
    print("training", flush=True)
    return int(wait_for("go") or "0")


if __name__ == "__main__":
    sys.exit(main())
