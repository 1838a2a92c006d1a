"""A throwaway PostgreSQL cluster for the test run: initdb in a temp dir, a free port, stopped after.

As root, PostgreSQL refuses to run, so the server runs as the `postgres` user (runuser).
Set TEST_DATABASE_URL to use an existing server instead.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass


@dataclass
class Cluster:
    url: str
    directory: str
    root: str
    bindir: str
    run_as: list[str]

    def stop(self) -> None:
        subprocess.run(
            self.run_as + [os.path.join(self.bindir, "pg_ctl"), "-D", self.directory, "-m", "immediate", "stop"],
            capture_output=True, check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _bindir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        found = shutil.which("initdb")
        if not found:
            raise RuntimeError("PostgreSQL is not installed: run `make system-deps` (apt-get install postgresql)")
        return os.path.dirname(found)
    return os.path.dirname(candidates[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start() -> Cluster:
    bindir = _bindir()
    directory = tempfile.mkdtemp(prefix="portal-pg-")
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(directory, "data")
    subprocess.run(
        run_as + [os.path.join(bindir, "initdb"), "-D", data, "-U", "portal", "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
        check=True, capture_output=True,
    )
    port = _free_port()
    options = (f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
    subprocess.run(
        run_as + [os.path.join(bindir, "pg_ctl"), "-D", data, "-o", options, "-l",
                  os.path.join(directory, "log"), "-w", "-t", "60", "start"],
        check=True, capture_output=True,
    )
    cluster = Cluster(f"postgresql+psycopg://portal@127.0.0.1:{port}/postgres", data, directory, bindir, run_as)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    return cluster
