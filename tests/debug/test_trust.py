"""smsupervise-debug does not talk to a socket another user planted: a fake supervisor run as
uid 1000 (``setpriv``) at the path the victim (root) uses gets no request, and the client says
whose socket it is and how to trust it on purpose."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, sleep_until

OTHER_UID = 1000
NEEDS_SETPRIV = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)"
)
CLIENT_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "supervisor")}

# A fake supervisor: answers any request with an exec stream (as a thief of exec would), and
# records every byte it received in a file.
FAKE_SERVER = """\
import os, socket, sys
path, record = sys.argv[1], sys.argv[2]
listener = socket.socket(socket.AF_UNIX)
listener.bind(path)
os.chmod(path, 0o777)
listener.listen(8)
open(record, "wb").close()
while True:
    conn, _ = listener.accept()
    data = conn.recv(65536)
    with open(record, "ab") as file:
        file.write(data or b"<empty>\\n")
    if data:
        conn.sendall(b'{"v":1,"ok":true,"item":{"stream":"stdout","data":"planted\\\\n"}}\\n')
        conn.sendall(b'{"v":1,"ok":true,"item":{"exit_code":0}}\\n{"v":1,"ok":true,"end":true}\\n')
    conn.close()
"""


@pytest.fixture
def planted() -> Iterator[tuple[Path, Path]]:
    """A socket served by uid 1000, in a directory of its own (owned by uid 1000, as
    /tmp/smsupervise-0 would be if another user made it first); yields it and the record of
    what it received."""
    where = Path(tempfile.mkdtemp(prefix="pl", dir="/tmp"))
    where.chmod(0o755)
    home = where / "smsupervise-0"
    home.mkdir()
    os.chown(home, OTHER_UID, OTHER_UID)
    script = where / "fake.py"
    script.write_text(FAKE_SERVER)
    record = where / "received"
    record.touch()
    os.chown(record, OTHER_UID, OTHER_UID)
    sock = home / "control.sock"
    as_other = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    fake = subprocess.Popen([*as_other, PYTHON, str(script), str(sock), str(record)])
    try:
        sleep_until(sock.exists, what="the planted socket")
        yield sock, record
    finally:
        fake.kill()
        fake.wait(10)
        shutil.rmtree(where, ignore_errors=True)


def _client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "smsupervise.debug", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env or CLIENT_ENV,
    )


@NEEDS_SETPRIV
@pytest.mark.parametrize("given", ["option", "variable"])
def test_a_socket_planted_by_another_uid_gets_nothing(planted: tuple[Path, Path], given: str) -> None:
    """root's exec, pointed at the planted socket (by --socket or $SMSUPERVISE_CONTROL_SOCKET):
    refused with the planter's uid and the fix; the fake server never sees the request."""
    sock, record = planted
    if given == "option":
        done = _client("--socket", str(sock), "exec", "--", "cat", "/etc/shadow")
    else:
        done = _client(
            "exec", "--", "cat", "/etc/shadow", env={**CLIENT_ENV, "SMSUPERVISE_CONTROL_SOCKET": str(sock)}
        )
    assert done.returncode == 1
    assert "planted" not in done.stdout
    assert f"belongs to uid {OTHER_UID}" in done.stderr
    assert f"--trust-uid {OTHER_UID}" in done.stderr
    assert b"shadow" not in record.read_bytes()


@NEEDS_SETPRIV
def test_a_planted_socket_in_a_trusted_directory_is_refused_by_peer_credentials(
    planted: tuple[Path, Path],
) -> None:
    """Even when the file and its directory look like ours (chowned to root after the fact), the
    answering process runs as uid 1000: SO_PEERCRED refuses it before a byte is sent."""
    sock, record = planted
    os.chown(sock.parent, 0, 0)
    os.chown(sock, 0, 0)
    done = _client("--socket", str(sock), "exec", "--", "id")
    assert done.returncode == 1
    assert f"runs as uid {OTHER_UID}, not as you or root" in done.stderr
    assert record.read_bytes() in (b"", b"<empty>\n")


@NEEDS_SETPRIV
def test_a_trusted_uid_is_talked_to(planted: tuple[Path, Path]) -> None:
    """The twin: --trust-uid 1000 says that supervisor is meant; the request goes and is answered."""
    sock, record = planted
    done = _client("--trust-uid", str(OTHER_UID), "--socket", str(sock), "exec", "--", "id")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "planted\n"
    assert b'"op":"exec"' in record.read_bytes()
