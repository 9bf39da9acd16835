"""Several processes, one service (--also FILE): nginx in front of a Python WSGI server, as the BYO
image runs them, without its `serve` script. Stopped in order (nginx drains first, on SIGQUIT); an
essential one that dies ends the run naming it; a restartable one comes back instead."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Supervised, events, sleep_until
from tests.serve.conftest import free_port, request, wait_event_where

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")

WSGI = """\
import os, signal, sys
from wsgiref.simple_server import make_server
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a clean exit: the run's code is the service's
def app(environ, start):
    start("200 OK", [("Content-Type", "text/plain")])
    return [b"from wsgi"]
server = make_server("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"]), app)
print("wsgi listening", flush=True)
server.serve_forever()
"""


def _nginx_conf(tmp: Path, port: int, upstream: int) -> Path:
    conf = tmp / "nginx.conf"
    conf.write_text(
        textwrap.dedent(f"""\
        worker_processes 1;
        {"user root;" if os.geteuid() == 0 else ""}
        pid {tmp}/nginx.pid;
        error_log {tmp}/error.log;
        events {{ worker_connections 64; }}
        http {{
          access_log off;
          client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
          fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
          server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{upstream}; }} }}
        }}
        """)
    )
    return conf


def _start(start, tmp: Path, *options: str, **nginx: object) -> tuple[Supervised, int]:
    front, upstream = free_port(), free_port()
    wsgi = tmp / "wsgi.py"
    wsgi.write_text(WSGI)
    also = tmp / "also.json"
    command = ["nginx", "-c", str(_nginx_conf(tmp, front, upstream)), "-g", "daemon off;"]
    also.write_text(json.dumps([{"name": "nginx", "command": command, "stop_signal": "QUIT", **nginx}]))
    env = {
        **os.environ,
        "SMSUPERVISE_SERVE": f"{sys.executable} {wsgi}",
        "SAGEMAKER_BIND_TO_PORT": str(upstream),
    }
    control = options or ("--control-socket", "none")
    run = start(*control, "--also", str(also), "serve", env=env, bufsize=0)
    sleep_until(lambda: request(front, "GET", "/").body == b"from wsgi", what="nginx -> wsgi")
    return run, front


def _nginx_master(run: Supervised) -> int:
    """nginx's master as seen from here: the init's child named nginx."""
    children = Path(f"/proc/{run.init_pid}/task/{run.init_pid}/children").read_text().split()
    return next(int(pid) for pid in children if Path(f"/proc/{pid}/comm").read_text().strip() == "nginx")


def test_nginx_and_the_wsgi_server_stop_in_order(start, tmp_path: Path) -> None:
    """SIGTERM: nginx gets SIGQUIT and has exited before the WSGI server gets SIGTERM; exit 0."""
    run, _ = _start(start, tmp_path)
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0, err[-3000:]
    records = events(err)
    names = [(e["event"], e.get("name"), e.get("signal")) for e in records]
    stopping = names.index(("process_stopping", "nginx", "SIGQUIT"))
    exited = names.index(("process_exited", "nginx", None))
    term = names.index(("signal_forwarded", None, "SIGTERM"))
    assert stopping < exited < term
    child = next(e for e in records if e["event"] == "child_exited")
    assert child["exit_code"] == 0


def test_an_essential_process_that_dies_ends_the_run_naming_it(start, tmp_path: Path) -> None:
    """SIGKILL nginx: the run stops with nginx and its signal in the reason, and exits non-zero
    although the WSGI server itself exits 0 on its SIGTERM."""
    run, _ = _start(start, tmp_path)
    os.kill(_nginx_master(run), signal.SIGKILL)
    code, _, err = run.wait()
    assert code == 137, err[-3000:]
    records = events(err)
    exited = next(e for e in records if e["event"] == "process_exited")
    assert (exited["name"], exited["exit_code"], exited["essential"]) == ("nginx", 137, True)
    assert records[-1]["stop"].startswith("Stopped by nginx exited (SIGKILL (signal 9))")


def test_a_restartable_process_comes_back_instead(start, tmp_path: Path) -> None:
    """The twin: with "restart": 1 the killed nginx is started again (a new pid) and serves; the
    run goes on until SIGTERM and ends cleanly."""
    run, front = _start(start, tmp_path, restart=1)
    first = _nginx_master(run)
    os.kill(first, signal.SIGKILL)
    restarting = run.wait_event("process_restarting")
    assert (restarting["name"], restarting["attempt"], restarting["after_s"]) == ("nginx", 1, 1.0)
    wait_event_where(run, "process_started", name="nginx")
    sleep_until(lambda: request(front, "GET", "/").body == b"from wsgi", what="nginx back")
    assert _nginx_master(run) != first
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0, err[-3000:]


def test_the_debug_socket_shows_each_process(start, tmp_path: Path) -> None:
    """status lists nginx (running, its pid, stop signal, restarts); tree shows its processes."""
    socket_path = tmp_path / "control.sock"
    run, _ = _start(start, tmp_path, "--control-socket", str(socket_path))
    client = [sys.executable, "-m", "smsupervise.debug", "--socket", str(socket_path), "--json"]
    status = json.loads(subprocess.run([*client, "status"], capture_output=True, check=True).stdout)
    (nginx,) = status["processes"]
    assert (nginx["name"], nginx["running"], nginx["stop_signal"], nginx["restarts"]) == (
        "nginx",
        True,
        "SIGQUIT",
        0,
    )
    tree = json.loads(subprocess.run([*client, "tree"], capture_output=True, check=True).stdout)
    assert "nginx" in json.dumps(tree)
    run.signal(signal.SIGTERM)
    assert run.wait()[0] == 0


def test_a_bad_file_is_refused_naming_the_field(start, tmp_path: Path) -> None:
    """The class of broken declarations: each is refused at start (exit 2) naming the file, the
    entry and the field."""
    cases = {
        "[]": "non-empty JSON list",
        '[{"name": "a"}]': 'a: "command"',
        '[{"name": "a b", "command": "x"}]': '"name"',
        '[{"name": "a", "command": "x", "stop_signal": "KILL"}]': 'a: "stop_signal"',
        '[{"name": "a", "command": "x", "restart": -1}]': 'a: "restart"',
        '[{"name": "a", "command": "x", "when": 1}]': "unknown field 'when'",
        '[{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]': "used twice",
        "{": "not JSON",
    }
    for text, expected in cases.items():
        also = tmp_path / "also.json"
        also.write_text(text)
        run = start("--control-socket", "none", "--also", str(also), "--", "true")
        code, _, err = run.wait()
        assert code == 2, (text, err)
        error = next(e for e in events(err) if e["event"] == "start_failed")["error"]
        assert str(also) in error, error
        assert expected in error, (text, error)
