"""The portal's benchmark: `make bench-quick` (about 20,000 members, a few seconds a scenario) and `make bench`
(1,000,000 members; `make bench BENCH_ARGS=--pg` on PostgreSQL). See bench/README.md.

One run: a scratch database (a SQLite file in a temporary folder, or a throwaway PostgreSQL server with --pg, or
BENCH_DATABASE_URL), migrated and loaded through the portal's own commands (`flask generate` when the portal has
it, else `flask demo`), benchmark staff and members made through its services (bench/prepare.py), then the portal
and the two ceilings of bench/ceiling_app.py served by gunicorn with the same settings, and every scenario driven
from another process (wrk, or bench/loadgen.py without it) with the same connections for the same time. It prints
a table and ends with the line
    lookup/tpl=R member/tpl=R checkout/write=R dashboard_ms=N checkout_p99_ms=N
Any answer other than the one a scenario expects, or any connection error, fails the run (exit 1).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = ROOT / ".venv" / "bin"
# Settings a developer's shell may carry that must not reach the servers or the commands of a run.
DROPPED = ("DATABASE_URL", "TEST_DATABASE_URL", "MAIL_SERVER", "SMS_GATEWAY_URL", "SMS_SENDER", "FLASK_APP",
           "RATELIMIT_STORAGE_URI", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "HTMX_CDN_URL", "FROZEN_NOW")
ACCEPT_LANGUAGE = "zh-CN,zh;q=0.9"  # the stores' own language, as a till's browser sends it
STARTED = time.monotonic()


class BenchError(Exception):
    """The run cannot go on or its figures are not to be trusted; said loudly, exit 1."""


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


# --- commands of the portal ---------------------------------------------------------------------------------

def run_command(args: list[str], env: dict, what: str, *, stdin: str | None = None, log: Path,
                progress_every: float | None = None) -> str:
    """Run one command of the portal; its output goes to the run's log, and to the screen when it fails.
    With `progress_every`, its latest line is shown at most that often (a long data load)."""
    began = last_shown = time.monotonic()
    lines: list[str] = []
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(args[:4])} ...  ({what})\n")
        process = subprocess.Popen(args, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        process.stdin.write(stdin or "")
        process.stdin.close()
        for line in process.stdout:
            lines.append(line)
            handle.write(line)
            if progress_every and time.monotonic() - last_shown >= progress_every:
                last_shown = time.monotonic()
                say(f"  {line.rstrip()[:150]}")
        returncode = process.wait()
    output = "".join(lines)
    if returncode != 0:
        raise BenchError(f"{what} failed (exit {returncode}):\n{output[-4000:]}")
    say(f"{what}: {time.monotonic() - began:.1f} s")
    return output


def flask(*args: str) -> list[str]:
    return [str(BIN / "flask"), "--app", "app", *args]


# --- servers ------------------------------------------------------------------------------------------------

def child_pids(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == parent and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return sorted(found)


def memory_kb(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM (its peak) of a process, in kB."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


@dataclass
class Server:
    """gunicorn serving one app on a free port of 127.0.0.1 (a socket bound here and handed over as fd://N)."""

    name: str
    app_spec: str
    env: dict
    log_path: Path
    settings: list[str]
    workers: int
    process: subprocess.Popen | None = None
    port: int = 0

    def start(self) -> Server:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        fd = listener.fileno()
        args = [str(BIN / "gunicorn"), self.app_spec, "--bind", f"fd://{fd}", *self.settings,
                "--error-logfile", "-", "--log-level", "warning"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, pass_fds=(fd,), start_new_session=True)
        listener.close()
        return self

    def wait_ready(self, path: str, timeout: float = 60) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn ({self.name}) exited with {self.process.returncode}:\n{self.log()}")
            if len(self.worker_pids()) == self.workers:
                try:
                    if Browser(self.port).get(path).status < 500:
                        return self
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.1)
        raise BenchError(f"gunicorn ({self.name}) did not answer in {timeout} s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        return child_pids(self.process.pid) if self.process and self.process.poll() is None else []

    def memory(self) -> dict[int, tuple[int, int]]:
        return {pid: memory_kb(pid) for pid in self.worker_pids()}

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this master leads: its workers, if left
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=10)


# --- a browser: cookies, CSRF, sign-in ----------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Browser:
    port: int
    cookies: dict = field(default_factory=dict)
    csrf: str = ""

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Answer:
        headers = {"Accept-Language": ACCEPT_LANGUAGE, **(headers or {})}
        if self.cookies:
            headers["Cookie"] = self.cookie_header()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            answer = Answer(response.status, response.read(), dict(response.getheaders()))
            for raw in response.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(raw).items():
                    if morsel["max-age"] == "0" or not morsel.value:
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            return answer
        finally:
            connection.close()

    def get(self, path: str, headers: dict | None = None) -> Answer:
        return self.request("GET", path, headers=headers)

    def post_form(self, path: str, data: dict) -> Answer:
        return self.request("POST", path, urlencode(data).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def sign_in(self, form_path: str, fields: dict, landing: str) -> Browser:
        """Open the sign-in form (for its CSRF token), send it, then open `landing` for the page's CSRF token
        (the one htmx sends as X-CSRFToken: the session was renewed at sign-in)."""
        page = self.get(form_path)
        token = _form_token(page.text)
        if page.status != 200 or not token:
            raise BenchError(f"GET {form_path}: {page.status}, no CSRF token\n{page.text[:1000]}")
        answer = self.post_form(form_path, {"csrf_token": token, **fields})
        if answer.status != 303:
            raise BenchError(f"sign-in at {form_path} refused ({answer.status}):\n{_visible_text(answer.text)}")
        page = self.get(landing)
        found = re.search(r'"X-CSRFToken":\s*"([^"]+)"', page.text)
        if page.status != 200 or not found:
            raise BenchError(f"GET {landing} after sign-in: {page.status}\n{page.text[:1000]}")
        self.csrf = found.group(1)
        return self


def _form_token(html: str) -> str | None:
    for tag in re.findall(r"<input[^>]*>", html):
        if 'name="csrf_token"' in tag:
            value = re.search(r'value="([^"]+)"', tag)
            if value:
                return value.group(1)
    return None


def _visible_text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()[:1500]


# --- the database, from outside the app (counting what the write scenarios recorded) ------------------------

class Counter:
    """Counts rows straight from the database, outside the servers under load (and vacuums PostgreSQL)."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        if url.startswith(("postgres://", "postgresql://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.engine = create_engine(url, poolclass=NullPool)

    def execute_autocommit(self, sql: str) -> None:
        from sqlalchemy import text

        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(sql))

    def count(self, sql: str, **params) -> int:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            return int(connection.execute(text(sql), params).scalar())


# --- scenarios ----------------------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    server: str  # "portal" or "ceiling"
    label: str
    items: list[tuple[str, str, str]]  # method, path, body
    creds: list[Browser] = field(default_factory=list)
    headers: dict = field(default_factory=dict)
    expected: int = 200
    verify_sql: str | None = None  # counts the rows the measured run recorded (:prefix: its keys' prefix, %)

    def write_file(self, folder: Path) -> Path:
        path = folder / f"{self.name}.txt"
        lines = [f"E\t{self.expected}"]
        lines += [f"H\t{name}\t{value}" for name, value in self.headers.items()]
        lines += [f"C\t{browser.cookie_header()}\t{browser.csrf}" for browser in self.creds]
        lines += [f"R\t{method}\t{path_}\t{body}" for method, path_, body in self.items]
        path.write_text("\n".join(lines) + "\n")
        return path


def build_scenarios(fixtures: dict, tills: list[Browser], phones: list[Browser]) -> dict[str, Scenario]:
    htmx = {"HX-Request": "true", "Accept-Language": ACCEPT_LANGUAGE}
    page = {"Accept-Language": ACCEPT_LANGUAGE}
    amounts = ("12.50", "88.00", "256.30", "39.90", "1024.00", "7.20")
    checkout = [("POST", f"/till/members/{card}/purchases",
                 f"gross={amounts[i % len(amounts)]}&points=0&receipt_number=BC-@KEY@&idempotency_key=@KEY@")
                for i, card in enumerate(fixtures["checkout_cards"])]
    returns = [("POST", f"/till/purchases/{pid}/returns", "amount=1.00&idempotency_key=@KEY@")
               for pid in fixtures["return_purchases"]]
    return {
        "tpl": Scenario("tpl", "ceiling", "tpl (ceiling)",
                        [("GET", f"/tpl?q={q}", "") for q in fixtures["lookup_last4"][:500]], headers=page),
        "lookup_phone": Scenario("lookup_phone", "portal", "lookup by phone",
                                 [("GET", f"/till/lookup?q={q}", "") for q in fixtures["lookup_phones"]],
                                 tills, htmx),
        "lookup_last4": Scenario("lookup_last4", "portal", "lookup by last 4",
                                 [("GET", f"/till/lookup?q={q}", "") for q in fixtures["lookup_last4"]],
                                 tills, htmx),
        "lookup_card": Scenario("lookup_card", "portal", "lookup by card",
                                [("GET", f"/till/lookup?q={q}", "") for q in fixtures["lookup_cards"]], tills, htmx),
        "member_home": Scenario("member_home", "portal", "member home /me/", [("GET", "/me/", "")], phones, page),
        "member_history": Scenario("member_history", "portal", "member history", [("GET", "/me/history", "")],
                                   phones, page),
        "write": Scenario("write", "ceiling", "write (ceiling)",
                          [("POST", "/write", f"card={card}&k=@KEY@") for card in fixtures["write_cards"]],
                          headers=page,
                          verify_sql="SELECT count(*) FROM ledger_entries WHERE idempotency_key LIKE :prefix"),
        "checkout": Scenario("checkout", "portal", "checkout", checkout, tills, htmx,
                             verify_sql="SELECT count(*) FROM purchases WHERE idempotency_key LIKE :prefix"),
        "return": Scenario("return", "portal", "return ¥1.00", returns, tills, htmx,
                           verify_sql="SELECT count(*) FROM returns WHERE idempotency_key LIKE :prefix"),
    }


# The order of the runs: each ceiling twice, around the scenarios it is the ceiling of, so that a machine that
# gets busier or quieter during the run moves both sides of a ratio.
ORDER = ("tpl", "lookup_phone", "lookup_last4", "lookup_card", "member_home", "member_history", "tpl",
         "write", "checkout", "return", "write")


@dataclass
class LoadSettings:
    tool: str
    connections: int
    threads: int
    duration: float
    warmup: float


def drive(scenario: Scenario, port: int, folder: Path, load: LoadSettings, seconds: float, log: Path) -> dict:
    """One run of a scenario from another process; the result as wrk.lua or loadgen.py prints it."""
    path = scenario.write_file(folder)
    prefix = "b" + secrets.token_hex(8)
    if load.tool == "wrk":
        args = ["wrk", "-t", str(load.threads), "-c", str(load.connections), "-d", f"{max(1, round(seconds))}s",
                "--timeout", "60s", "-s", str(BENCH / "wrk.lua"), f"http://127.0.0.1:{port}", "--",
                str(path), prefix, str(load.threads)]
    else:
        args = [sys.executable, "-m", "bench.loadgen", str(path), str(port), str(load.connections), f"{seconds:g}",
                prefix]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 180)
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    found = re.search(r"^BENCH_RESULT (\{.*\})$", done.stdout, re.M)
    if done.returncode != 0 or not found:
        raise BenchError(f"the load generator failed on {scenario.name} (exit {done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    result = json.loads(found.group(1))
    result["prefix"] = prefix
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6) if result["duration_us"] else 0.0
    problems = {name: count for name, count in result["errors"].items() if count}
    if result["unexpected"]:
        problems[f"answers other than {scenario.expected}"] = (
            f"{result['unexpected']} (statuses seen: {result['unexpected_statuses'].strip()})")
    if result["requests"] == 0:
        problems["requests"] = "none completed"
    if problems:
        raise BenchError(f"{scenario.name}: errors during the run: {problems}")
    return result


def smoke(scenario: Scenario, port: int) -> int:
    """One request of the scenario as a browser sends it: the answer must be the expected one. Its body size."""
    method, path, body = scenario.items[0]
    browser = scenario.creds[0] if scenario.creds else Browser(port)
    headers = dict(scenario.headers)
    payload = None
    if body:
        payload = body.replace("@KEY@", "smoke" + secrets.token_hex(8)).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if browser.csrf:
        headers["X-CSRFToken"] = browser.csrf
    answer = browser.request(method, path, payload, headers)
    if answer.status != scenario.expected:
        raise BenchError(f"{scenario.name}: {method} {path} answered {answer.status}, not {scenario.expected}:\n"
                         f"{_visible_text(answer.text)}")
    return len(answer.body)


def refresh(browsers: list[Browser], path: str, headers: dict) -> None:
    """Take any renewed session cookie (the idle clock is renewed every 30 s), as a browser would, so the load
    never sends a cookie the portal re-signs on every answer."""
    for browser in browsers:
        answer = browser.get(path, headers)
        if answer.status != 200:
            raise BenchError(f"GET {path} as a signed-in user answered {answer.status}")


# --- data ---------------------------------------------------------------------------------------------------

def loader_command(env: dict, members: int, seed: int, wanted: str) -> tuple[str, list[str]]:
    """`flask generate` (portal/generate.py) when the portal has it (or when asked), else `flask demo` (slow:
    every purchase through the services)."""
    if wanted in ("auto", "generate"):
        probe = subprocess.run(flask("generate", "--help"), cwd=ROOT, env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            args = flask("generate", "--members", str(members))
            if "--seed" in probe.stdout:
                args += ["--seed", str(seed)]
            return "generate", args
        if wanted == "generate":
            raise BenchError(f"`flask generate` is not available:\n{probe.stdout}{probe.stderr}")
    return "demo", flask("demo", "--members", str(members), "--seed", str(seed))


# `flask demo` records every purchase through the services: about 40 ms a member here (2,000 members in 81 s on
# this 2-CPU machine, while it was shared); generate, when the portal has it, is meant to be much faster.
DEMO_SECONDS_PER_MEMBER = 0.04
DEMO_LIMIT = 50_000


def cache_key(loader: str, members: int, seed: int) -> str:
    """What the loaded data depends on: the loader's code, the models, the rules it computes with, the dashboard
    totals and the migrations."""
    digest = hashlib.sha256(f"{loader}|{members}|{seed}".encode())
    sources = [ROOT / "portal" / f"{name}.py" for name in (loader, "models", "rollups", "rules", "checkout",
                                                            "returns", "tiers", "ledger")]
    sources += sorted((ROOT / "migrations" / "versions").glob("*.py"))
    for source in sources:
        if source.exists():
            digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (its WAL included), by SQLite's online backup."""
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


# --- the run ------------------------------------------------------------------------------------------------

def percentile_text(value_us: float) -> str:
    return f"{value_us / 1000:8.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000, help="members in the data set (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="short runs: 1 s warm-up and 5 s a scenario")
    parser.add_argument("--duration", type=float, help="seconds a scenario is measured (default 20, quick 5)")
    parser.add_argument("--warmup", type=float, help="seconds of load before each measurement (default 3, quick 1)")
    parser.add_argument("--pg", action="store_true", help="on a throwaway PostgreSQL server instead of SQLite")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--workers", type=int, default=8, help="gunicorn workers (default 8: one a connection)")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (default 1)")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class (default sync)")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                        help="the load generator: wrk when installed (default), else bench/loadgen.py")
    parser.add_argument("--load-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--loader", choices=("auto", "generate", "demo"), default="auto",
                        help="the data loader: `flask generate` when the portal has it (default), else demo")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--dashboard-runs", type=int, default=7, help="timed dashboard requests (default 7)")
    parser.add_argument("--only", help="comma-separated scenarios to run (default all): "
                        + ", ".join([*dict.fromkeys(ORDER), "dashboard"]))
    parser.add_argument("--cache", type=Path, help="SQLite only: keep the loaded data set in this folder and reuse "
                                                   "it while the loader, models and migrations are unchanged")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (database, logs, scenarios)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--profile", metavar="SCENARIOS",
                        help="comma-separated portal scenarios to record with py-spy during their measured run "
                             "(py-spy must be in .venv; the profiles are kept in the scratch folder)")
    parser.add_argument("--profile-mode", choices=tuple(PROFILE_MODES), default="cpu",
                        help="cpu: where the Python time goes (default); wall: where the requests wait too")
    args = parser.parse_args(argv)
    duration = args.duration or (5.0 if args.quick else 20.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    if duration + warmup > 28:
        raise SystemExit("--duration + --warmup must stay under 28 s: the portal renews a session's idle clock "
                         "every 30 s, and the load would then send a cookie it re-signs on every answer")
    tool = args.load
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    elif tool == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --load python")
    load = LoadSettings(tool, args.connections, max(1, min(args.load_threads, args.connections)), duration, warmup)
    only = set(args.only.split(",")) if args.only else {*ORDER, "dashboard"}
    unknown = only - {*ORDER, "dashboard"}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    profile = set(args.profile.split(",")) if args.profile else set()
    if profile and not (BIN / "py-spy").exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")

    scratch = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    log = scratch / "run.log"
    servers: list[Server] = []
    try:
        report = _run(args, load, only, profile, duration, warmup, scratch, log, servers)
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", flush=True)
        print(f"(logs kept in {scratch})", flush=True)
        args.keep = True
        return 1
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(report, flush=True)
    return 0


def _run(args, load: LoadSettings, only: set, profile: set, duration: float, warmup: float, scratch: Path,
         log: Path, servers: list) -> str:
    password = secrets.token_urlsafe(18)
    env = {name: value for name, value in os.environ.items() if name not in DROPPED}
    pg_server = None
    instance = scratch / "instance"
    instance.mkdir()
    if os.environ.get("BENCH_DATABASE_URL"):
        url, kind = os.environ["BENCH_DATABASE_URL"], "given database"
        kind = "PostgreSQL" if url.startswith("postgres") else "SQLite" if url.startswith("sqlite") else kind
    elif args.pg:
        from bench import pgcluster

        pg_server = pgcluster.start(str(scratch))
        url, kind = pg_server.url, "PostgreSQL"
        say(f"PostgreSQL server started in {scratch / 'pg'}")
    else:
        url, kind = f"sqlite:///{scratch / 'portal.db'}", "SQLite"
    try:
        return _run_on(args, load, only, profile, duration, warmup, scratch, log, servers, env, url, kind,
                       password, instance)
    finally:
        for server in servers:
            server.stop()
        servers.clear()
        if pg_server is not None:
            pg_server.stop()


def _run_on(args, load, only, profile, duration, warmup, scratch, log, servers, env, url, kind, password,
            instance) -> str:
    env.update({
        "PORTAL_ENV": "production", "SECRET_KEY": secrets.token_hex(32), "TRUSTED_HOSTS": "127.0.0.1,localhost",
        "SESSION_COOKIE_SECURE": "0", "RATELIMIT_ENABLED": "0", "DATABASE_URL": url,
        "PORTAL_INSTANCE_PATH": str(instance), "PYTHONDONTWRITEBYTECODE": "1",
    })
    say(f"scratch folder {scratch}; database: {kind}")

    # 1. schema and data
    loader, load_args = loader_command(env, args.members, args.seed, args.loader)
    if loader == "demo":
        minutes = args.members * DEMO_SECONDS_PER_MEMBER / 60
        if args.loader == "auto" and args.members > DEMO_LIMIT:
            raise BenchError(f"`flask generate` is not in the portal yet, and `flask demo` would take about "
                             f"{minutes / 60:.0f} hours for {args.members:,} members (it records every purchase "
                             f"through the services). Use --members {DEMO_LIMIT:,} or fewer, or --loader demo to "
                             "wait for it anyway.")
        if minutes > 2:
            say(f"`flask generate` is not in the portal yet: `flask demo` loads {args.members:,} members, which "
                f"takes about {minutes:.0f} minutes on a machine like this one")
    cached = None
    if args.cache and kind == "SQLite" and url.startswith("sqlite:///"):
        args.cache.mkdir(parents=True, exist_ok=True)
        cached = args.cache / f"portal-{loader}-{args.members}-{cache_key(loader, args.members, args.seed)}.db"
    database_file = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
    load_seconds = None
    if cached is not None and cached.exists():
        began = time.monotonic()
        sqlite_copy(cached, database_file)
        say(f"data set taken from the cache {cached}: {time.monotonic() - began:.1f} s")
    else:
        run_command(flask("db", "upgrade"), env, "migrate (flask db upgrade)", log=log)
        began = time.monotonic()
        run_command(load_args, env, f"load {args.members:,} members (flask {loader})", log=log,
                    progress_every=20)
        load_seconds = time.monotonic() - began
        if cached is not None:
            sqlite_copy(database_file, cached)
            say(f"data set kept in the cache {cached}")

    # 2. benchmark accounts, through the portal's CLI and services
    run_command(flask("create-admin", "--username", "bench-admin", "--name", "Bench admin", "--password", password),
                env, "create-admin", log=log)
    fixtures_path = scratch / "fixtures.json"
    run_command([str(BIN / "python"), "-m", "bench.prepare", str(fixtures_path), str(args.seed)], env,
                "benchmark cashiers, members and purchases (bench/prepare.py)", stdin=password + "\n", log=log)
    fixtures = json.loads(fixtures_path.read_text())
    if kind == "PostgreSQL":
        # A database in service has been vacuumed and analysed; a freshly loaded one has not, and autovacuum
        # would do it in the middle of the first measurements.
        began = time.monotonic()
        Counter(url).execute_autocommit("VACUUM (ANALYZE)")
        say(f"VACUUM (ANALYZE): {time.monotonic() - began:.1f} s")
    began = time.monotonic()
    os.sync()  # the load's dirty pages written out now, not by the kernel in the middle of the first measurement
    say(f"sync: {time.monotonic() - began:.1f} s")

    # 3. the portal, the same gunicorn settings for both servers
    settings = ["--workers", str(args.workers), "--worker-class", args.worker_class, "--threads", str(args.threads),
                "--timeout", "120", "--graceful-timeout", "5", "--keep-alive", "10", "--no-control-socket"]
    portal = Server("portal", "app:app", env, scratch / "gunicorn-portal.log", settings, args.workers).start()
    servers.append(portal)
    portal.wait_ready("/login")
    say(f"portal served by gunicorn on port {portal.port}: {' '.join(settings[:6])}")

    tills = [Browser(portal.port).sign_in("/login", {"username": name, "password": password}, "/till/")
             for name in fixtures["cashiers"]]
    phones = [Browser(portal.port).sign_in("/member/login", {"phone": m["phone"], "password": password}, "/me/")
              for m in fixtures["member_logins"]]
    admin = Browser(portal.port).sign_in("/login", {"username": "bench-admin", "password": password},
                                         "/manage/dashboard")
    say(f"signed in: {len(tills)} tills, {len(phones)} members on their phones, 1 admin")

    scenarios = build_scenarios(fixtures, tills, phones)
    # The size of the real lookup fragments, which the tpl ceiling's template is sized to.
    sizes = {}
    for name in ("lookup_phone", "lookup_last4", "lookup_card"):
        sample = scenarios[name]
        bodies = []
        for method, path, _body in sample.items[:10]:
            answer = tills[0].get(path, sample.headers)
            if answer.status != 200:
                raise BenchError(f"{name}: GET {path} answered {answer.status}:\n{_visible_text(answer.text)}")
            bodies.append(len(answer.body))
        sizes[name] = statistics.mean(bodies)
    target = round(statistics.mean(sizes.values()))
    ceiling_env = dict(env, BENCH_TPL_BYTES=str(target))
    ceiling = Server("ceiling", "bench.ceiling_app:app", ceiling_env, scratch / "gunicorn-ceiling.log", settings,
                     args.workers).start()
    servers.append(ceiling)
    ceiling.wait_ready("/ready")
    tpl_bytes = smoke(scenarios["tpl"], ceiling.port)
    say(f"ceiling app on port {ceiling.port}; lookup fragments "
        + ", ".join(f"{n.split('_')[1]} {s:,.0f} B" for n, s in sizes.items())
        + f"; tpl renders {tpl_bytes:,} B (target {target:,} B)")

    ports = {"portal": portal.port, "ceiling": ceiling.port}
    for name in dict.fromkeys(ORDER):
        if name in only:
            smoke(scenarios[name], ports[scenarios[name].server])
    say("every scenario answered as expected once; measuring "
        f"({load.tool}, {load.connections} connections, {warmup:g} s warm-up + {duration:g} s each)")

    counter = Counter(url)
    folder = scratch / "scenarios"
    folder.mkdir()
    results: dict[str, list[dict]] = {}
    profiles = []
    for name in ORDER:
        if name not in only:
            continue
        scenario = scenarios[name]
        if scenario.server == "portal":
            refresh(scenario.creds, "/me/card" if scenario.creds is phones else "/till/lookup?q=",
                    scenario.headers)
        port = ports[scenario.server]
        if warmup > 0:
            drive(scenario, port, folder, load, warmup, log)
        spies = _start_profiles(portal, name, scratch, duration, args.profile_mode) if name in profile else []
        result = drive(scenario, port, folder, load, duration, log)
        profiles += _finish_profiles(spies)
        if scenario.verify_sql:
            time.sleep(0.5)  # answers the load generator stopped waiting for may still be committing
            recorded = counter.count(scenario.verify_sql, prefix=result["prefix"] + "%")
            if not result["requests"] <= recorded <= result["requests"] + 2 * load.connections:
                raise BenchError(f"{name}: the load generator counted {result['requests']} answers, but the "
                                 f"database recorded {recorded}")
            result["recorded"] = recorded
        results.setdefault(name, []).append(result)
        say(f"{scenario.label:<22} {result['rps']:8.1f} req/s  p50 {result['p50_us'] / 1000:6.1f} ms  "
            f"p99 {result['p99_us'] / 1000:6.1f} ms  ({result['requests']} requests)")

    # 4. the dashboard, one request at a time
    dashboard_ms: list[float] = []
    if "dashboard" in only:
        path = "/manage/dashboard?period=30"
        if admin.get(path, {"Accept-Language": ACCEPT_LANGUAGE}).status != 200:  # warm: templates, caches
            raise BenchError(f"GET {path} as admin did not answer 200")
        for _ in range(max(1, args.dashboard_runs)):
            began = time.perf_counter()
            answer = admin.get(path, {"Accept-Language": ACCEPT_LANGUAGE})
            dashboard_ms.append((time.perf_counter() - began) * 1000)
            if answer.status != 200:
                raise BenchError(f"GET {path} answered {answer.status}")
        say(f"dashboard, 30 days, all stores: median {statistics.median(dashboard_ms):.0f} ms "
            f"(min {min(dashboard_ms):.0f}, max {max(dashboard_ms):.0f}, {len(dashboard_ms)} requests)")

    memory = {"portal": portal.memory(), "ceiling": ceiling.memory()}
    for server in servers:
        server.stop()
    return _report(args, load, kind, loader, load_seconds, fixtures, sizes, tpl_bytes, results, dashboard_ms,
                   memory, profiles, scratch)


# cpu: only the thread holding the GIL, i.e. where the workers' Python time goes (the threads waiting for the GIL
# are left out, or every thread would seem to spend its time wherever it last let the GIL go);
# wall: every thread, waiting ones too (lock waits, the database, the network), as the requests spend their time.
PROFILE_MODES = {"cpu": ["--gil"], "wall": ["--idle"]}


def _start_profiles(portal: Server, name: str, scratch: Path, duration: float, mode: str) -> list:
    spies = []
    for pid in portal.worker_pids():
        out = scratch / f"profile-{name}-{mode}-{pid}.txt"
        spies.append((subprocess.Popen([str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration",
                                        str(int(duration)), "--rate", "100", *PROFILE_MODES[mode], "--format",
                                        "raw", "--output", str(out)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL), out))
    return spies


def _finish_profiles(spies: list) -> list:
    done = []
    for process, out in spies:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        done.append(str(out))
    return done


def _mean_rps(results: dict, *names: str) -> float | None:
    """The mean over `names` of each one's mean req/s over its runs (None if none ran)."""
    per_name = [statistics.mean(r["rps"] for r in results[name]) for name in names if results.get(name)]
    return statistics.mean(per_name) if per_name else None


def _rate(value: float | None) -> str:
    return f"{value:.1f} req/s" if value else "not run"


def _ratio(top: float | None, bottom: float | None) -> str:
    return f"{top / bottom:.2f}" if top and bottom else "n/a"


def _report(args, load, kind, loader, load_seconds, fixtures, sizes, tpl_bytes, results, dashboard_ms, memory,
            profiles, scratch) -> str:
    figures = fixtures["figures"]
    lines = ["", "=" * 78,
             f"Portal benchmark on {kind}: {figures['members']:,} members, {figures['purchases']:,} purchases, "
             f"{figures['ledger_entries']:,} ledger entries ({loader}"
             + (f", loaded in {load_seconds:.0f} s" if load_seconds else ", from the cache") + ")",
             f"gunicorn --workers {args.workers} --worker-class {args.worker_class} --threads {args.threads} "
             f"(portal and ceilings alike); load: {load.tool}, {load.connections} connections, "
             f"{load.warmup:g} s warm-up + {load.duration:g} s a scenario; {os.cpu_count()} CPUs",
             "",
             f"{'scenario':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}{'bytes/ans':>11}  vs ceiling"]
    ceilings = {"tpl": _mean_rps(results, "tpl"), "write": _mean_rps(results, "write")}
    against = {"lookup_phone": "tpl", "lookup_last4": "tpl", "lookup_card": "tpl", "member_home": "tpl",
               "member_history": "tpl", "checkout": "write", "return": "write"}
    shown = []
    for name in ORDER:
        if name in results and name not in shown:
            shown.append(name)
    for name in shown:
        for index, result in enumerate(results[name]):
            label = build_label(name, index, len(results[name]))
            ratio = ""
            if name in against and ceilings[against[name]]:
                ratio = f"{result['rps'] / ceilings[against[name]]:.2f} × {against[name]}"
            per_answer = result["bytes"] / result["answers"] if result.get("answers") else 0
            lines.append(f"{label:<24}{result['rps']:9.1f}{result['p50_us'] / 1000:9.1f}"
                         f"{result['p99_us'] / 1000:9.1f}{result['requests']:10d}{per_answer:11,.0f}  {ratio}")
    lookup = _mean_rps(results, "lookup_phone", "lookup_last4", "lookup_card")
    member = _mean_rps(results, "member_home", "member_history")
    checkout = _mean_rps(results, "checkout")
    checkout_p99 = max((r["p99_us"] for r in results.get("checkout", [])), default=None)
    dashboard = statistics.median(dashboard_ms) if dashboard_ms else None
    portal_rss = max((rss for rss, _peak in memory["portal"].values()), default=0)
    portal_peak = max((peak for _rss, peak in memory["portal"].values()), default=0)
    ceiling_rss = max((rss for rss, _peak in memory["ceiling"].values()), default=0)
    lines += [
        "",
        "lookup fragment sizes (bytes): " + ", ".join(f"{n.split('_')[1]} {s:,.0f}" for n, s in sizes.items())
        + f"; tpl renders {tpl_bytes:,}",
        f"ceilings (mean of their runs): tpl {_rate(ceilings['tpl'])}, write {_rate(ceilings['write'])}",
        f"lookup = mean of the three lookups: {_rate(lookup)}; member = mean of home and history: {_rate(member)}",
        (f"dashboard, 30 days, all stores, one request at a time: median {dashboard:.0f} ms "
         f"(min {min(dashboard_ms):.0f}, max {max(dashboard_ms):.0f}, n={len(dashboard_ms)})")
        if dashboard_ms else "dashboard: not run",
        f"memory per portal worker at the end (VmRSS, max of {len(memory['portal'])}): {portal_rss / 1024:.0f} MB "
        f"(peak VmHWM {portal_peak / 1024:.0f} MB; target < 200 MB: "
        f"{'met' if portal_peak < 200 * 1024 else 'NOT MET'}); ceiling workers {ceiling_rss / 1024:.0f} MB",
    ]
    if profiles:
        lines.append("py-spy profiles (raw, collapsed stacks): " + ", ".join(profiles))
    if args.keep:
        lines.append(f"scratch folder kept: {scratch}")
    summary = {
        "lookup/tpl": _ratio(lookup, ceilings["tpl"]), "member/tpl": _ratio(member, ceilings["tpl"]),
        "checkout/write": _ratio(checkout, ceilings["write"]),
        "dashboard_ms": f"{dashboard:.0f}" if dashboard is not None else "n/a",
        "checkout_p99_ms": f"{checkout_p99 / 1000:.0f}" if checkout_p99 is not None else "n/a",
    }
    if args.json:
        args.json.write_text(json.dumps({
            "database": kind, "loader": loader, "load_seconds": load_seconds, "figures": figures,
            "settings": {"workers": args.workers, "threads": args.threads, "worker_class": args.worker_class,
                         "load": load.__dict__},
            "fragment_bytes": sizes, "tpl_bytes": tpl_bytes, "results": results, "dashboard_ms": dashboard_ms,
            "memory_kb": {k: {str(p): v for p, v in m.items()} for k, m in memory.items()}, "summary": summary,
        }, indent=2))
    lines.append("")
    lines.append(" ".join(f"{name}={value}" for name, value in summary.items()))
    return "\n".join(lines)


def build_label(name: str, index: int, runs: int) -> str:
    labels = {"tpl": "tpl (ceiling)", "lookup_phone": "lookup by phone", "lookup_last4": "lookup by last 4",
              "lookup_card": "lookup by card", "member_home": "member home", "member_history": "member history",
              "write": "write (ceiling)", "checkout": "checkout", "return": "return ¥1.00"}
    label = labels.get(name, name)
    return f"{label} #{index + 1}" if runs > 1 else label


if __name__ == "__main__":
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() and (BIN / "python").exists():
        os.execv(str(BIN / "python"), [str(BIN / "python"), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
