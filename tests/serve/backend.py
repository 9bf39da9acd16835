"""A model server for the serve-front tests: listens on $SAGEMAKER_BIND_TO_PORT (threaded, HTTP/1.1)
and says what happens on stderr, one line each (the tests' synchronisation).

- ``/ping`` (or ``/health``): 200 once loaded. With ``--load-gate FILE`` the server listens at once
  but is "loading" until FILE exists: its health check blocks until then (as gunicorn workers that
  load the model do). ``--health-path P`` answers only P (a vLLM-like server: /health).
- ``POST /invocations`` (or whatever path): the body is a number of seconds to work, then the answer
  ``done <seconds> <path>``; ``started <path>`` is printed when the work begins. While it works the
  connection is watched: a client that goes away prints ``client gone``.
- ``GET /headers``: the request's headers as received, in order.
- ``GET /stream?gate=DIR``: a chunked response of 3 chunks ``part-<k>``; chunk k+1 is sent only once
  DIR/gate-<k> exists (the test creates it after it has seen chunk k).
- ``POST /count``: reads the whole body, answers its length and sha256.
- ``POST /say``: the body is written to stderr as it is (a server's log lines).
- ``POST /reject``: 413 at once, before the body is read (then read and dropped to its end).
- SIGTERM ends it at once (Python's default): whatever is in flight is cut.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

POLL = 0.01  # how often gate files are looked for (the server's own wait; not the test's)


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load-gate")
    parser.add_argument("--health-path", default="/ping")
    args = parser.parse_args()
    loaded = threading.Event()

    def load() -> None:
        if args.load_gate:
            while not os.path.exists(args.load_gate):
                time.sleep(POLL)
        loaded.set()
        say("loaded")

    class Handler(BaseHTTPRequestHandler):
        """The paths above, HTTP/1.1 with keep-alive."""

        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend-Path", self.path)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == args.health_path:
                loaded.wait()
                self._answer(200, b"")
            elif self.path.startswith("/headers"):  # what arrived, in order, as the parser kept it
                self._answer(200, repr(list(self.headers.raw_items())).encode())
            elif self.path.startswith("/stream"):
                self._stream(self.path.partition("gate=")[2])
            else:
                self._answer(404, b"no such path\n")

        def _stream(self, gates: str) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for k in range(3):
                data = f"part-{k}\n".encode()
                self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
                self.wfile.flush()
                while not Path(gates, f"gate-{k}").exists():
                    time.sleep(POLL)
            self.wfile.write(b"0\r\n\r\n")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            if self.path == "/reject":  # answered before the body is read, as a 413 would be
                self.close_connection = True
                self.send_response(413)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.flush()
                while self.rfile.read1(1 << 20):  # then read what comes, so the answer is not reset
                    pass
                return
            if self.path == "/say":  # the body goes to stderr as the server's own line(s)
                sys.stderr.write(self.rfile.read(length).decode())
                sys.stderr.flush()
                self._answer(200, b"said")
                return
            if self.path == "/count":
                digest, total = hashlib.sha256(), 0
                while total < length:
                    data = self.rfile.read(min(1 << 20, length - total))
                    if not data:
                        break
                    digest.update(data)
                    total += len(data)
                self._answer(200, f"{total} {digest.hexdigest()}".encode())
                return
            seconds = float(self.rfile.read(length) or b"0")
            say(f"started {self.path}")
            # Work for ``seconds``, watching the connection: readable with no data is the client gone.
            if select.select([self.connection], [], [], seconds)[0] and not self.connection.recv(
                1, socket.MSG_PEEK
            ):
                say("client gone")
                return
            self._answer(200, f"done {seconds:g} {self.path}".encode())

    if os.environ.get("HOLD"):  # a leftover that outlives this server (tests of the end of a run)
        subprocess.Popen(
            [sys.executable, "-c", os.environ["HOLD"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler)
    server.daemon_threads = True
    threading.Thread(target=load, daemon=True).start()
    say(f"listening {server.server_address[1]}")
    server.serve_forever()


if __name__ == "__main__":
    main()
