"""Real gunicorn servers for the chain and fault tests, and a small standard-library HTTP client for them.

Each server is `.venv/bin/gunicorn app:app` on a socket this module binds first (a free port on 127.0.0.1,
handed over as fd://N, so no other process can take the port in between), with its own environment, its log
(gunicorn's and the app's stderr) in a file, and its workers found as the children of its master process.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
# Settings a developer's shell may carry that must not reach a test server.
_DROPPED = ("DATABASE_URL", "TEST_DATABASE_URL", "MAIL_SERVER", "SMS_GATEWAY_URL", "SMS_SENDER", "FLASK_APP",
            "RATELIMIT_STORAGE_URI", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY")


@dataclass
class Answer:
    """One HTTP answer, as the client saw it."""

    status: int
    body: bytes
    headers: dict[str, str]
    server: str = ""

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def child_pids(parent: int) -> list[int]:
    """The live processes whose parent is `parent` (read from /proc, no dependency)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == parent and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return sorted(found)


def _open_paths(pid: int) -> set[str]:
    """What each of a process's file descriptors points at: a path, or "socket:[inode]"."""
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return found


def _tcp_sockets_to(port: int) -> set[str]:
    """The sockets ("socket:[inode]") of this host's TCP connections to `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


class Gunicorn:
    """One gunicorn master and its workers serving the portal on a free local port."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, *, workers: int = 2,
                 worker_class: str = "sync", threads: int = 1, timeout: int = 30) -> None:
        self.name = name
        self.workers = workers
        self.worker_class = worker_class
        self.threads = threads
        self.timeout = timeout
        self.env = {k: v for k, v in os.environ.items() if k not in _DROPPED} | env
        self.log_path = Path(log_dir) / f"gunicorn-{name}.log"
        self.process: subprocess.Popen | None = None
        self.port = 0

    # --- life ----------------------------------------------------------------------------------------------

    def start(self) -> Gunicorn:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        fd = listener.fileno()
        args = [
            str(GUNICORN), "app:app", "--bind", f"fd://{fd}", "--workers", str(self.workers),
            "--worker-class", self.worker_class, "--threads", str(self.threads), "--timeout", str(self.timeout),
            "--graceful-timeout", "3", "--no-control-socket", "--error-logfile", "-", "--log-level", "info",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, pass_fds=(fd,), start_new_session=True)
        listener.close()  # the master has its own copy of the socket
        return self

    def wait_ready(self, timeout: float = 45) -> Gunicorn:
        """Until every worker is up and the server answers, or fail with the server's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn {self.name} exited with {self.process.returncode}\n{self.log()}")
            if len(self.worker_pids()) == self.workers:
                try:
                    if self.get("/api/v1/openapi.json", timeout=5).status == 200:
                        return self
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn {self.name} did not answer within {timeout} s\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM the master and wait; whatever is left of its process group after 10 s is killed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this server's master leads: its workers
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        return child_pids(self.process.pid) if self.process and self.process.poll() is None else []

    def serving_worker_pids(self) -> list[int]:
        """Workers past their start-up that have served: they hold the database open (the SQLite file, or a
        connection to PostgreSQL's port), which the engine's pool keeps after the first request."""
        url = make_url(self.env["DATABASE_URL"])
        if url.get_backend_name() == "sqlite":
            target = os.path.realpath(url.database)
            return [pid for pid in self.worker_pids() if target in _open_paths(pid)]
        sockets = _tcp_sockets_to(url.port or 5432)
        return [pid for pid in self.worker_pids() if _open_paths(pid) & sockets]

    def log(self, tail: int = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log for {self.name})"
        return f"--- gunicorn {self.name} (port {self.port}) log, last {tail} characters ---\n{text[-tail:]}"

    # --- HTTP ----------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> Answer:
        """One request on a new connection. Connection errors (a worker killed mid-request) are raised."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, response.read(), dict(response.getheaders()), self.name)
        finally:
            connection.close()

    def get(self, path: str, **kwargs) -> Answer:
        return self.request("GET", path, **kwargs)

    def post_json(self, path: str, payload, headers: dict | None = None, timeout: float = 60) -> Answer:
        return self.request("POST", path, json.dumps(payload).encode(),
                            {"Content-Type": "application/json", **(headers or {})}, timeout=timeout)


@dataclass
class Browser:
    """A cookie jar and the pages of one person's browser, against any server (no redirects followed)."""

    cookies: dict[str, str] = field(default_factory=dict)

    def _send(self, server: Gunicorn, method: str, path: str, body: bytes | None, headers: dict) -> Answer:
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers.setdefault("Accept-Language", "en")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            answer = Answer(response.status, response.read(), dict(response.getheaders()), server.name)
            for raw in response.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(raw).items():
                    if morsel["max-age"] == "0" or not morsel.value:
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            return answer
        finally:
            connection.close()

    def get(self, server: Gunicorn, path: str) -> Answer:
        return self._send(server, "GET", path, None, {})

    def post_form(self, server: Gunicorn, path: str, data: dict) -> Answer:
        return self._send(server, "POST", path, urlencode(data).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"})

    def sign_in(self, server: Gunicorn, username: str, password: str) -> Answer:
        """The staff sign-in as a person does it: open the form (for its CSRF token), then send it."""
        page = self.get(server, "/login")
        assert page.status == 200, page.text[:500]
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
        assert token, "no CSRF token on the sign-in page"
        return self.post_form(server, "/login", {"csrf_token": token.group(1), "username": username,
                                                 "password": password})
