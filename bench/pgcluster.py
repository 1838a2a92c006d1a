"""A throwaway PostgreSQL server for `bench/run.py --pg`: initdb in the run's scratch folder, a free port on
127.0.0.1, stopped and deleted with the folder at the end. As root the server runs as the `postgres` user.

Unlike the test suite's cluster it keeps PostgreSQL's durable defaults (fsync, synchronous_commit,
full_page_writes): a commit costs what it costs in production, for the portal and for the write ceiling alike.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass


@dataclass
class PgServer:
    url: str
    data: str
    bindir: str
    run_as: list[str]

    def stop(self) -> None:
        subprocess.run(self.run_as + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                                      "stop"], capture_output=True, check=False)


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return os.path.dirname(found[0])
    initdb = shutil.which("initdb")
    if not initdb:
        raise SystemExit("PostgreSQL is not installed: `make system-deps` (apt-get install postgresql), or set "
                         "BENCH_DATABASE_URL to an empty database.")
    return os.path.dirname(initdb)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(folder: str, database: str = "portal_bench") -> PgServer:
    """Start a server in `folder`/pg and create `database` in it; the URL points at that database."""
    bindir = _bindir()
    root = os.path.join(folder, "pg")
    os.makedirs(root)
    run_as: list[str] = []
    if os.geteuid() == 0:
        os.chmod(folder, 0o755)  # postgres must reach its folder inside the scratch folder
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")
    subprocess.run(run_as + [os.path.join(bindir, "initdb"), "-D", data, "-U", "portal", "--auth=trust",
                             "--encoding=UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    port = _free_port()
    options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100 "
               "-c shared_buffers=512MB -c max_wal_size=4GB")
    subprocess.run(run_as + [os.path.join(bindir, "pg_ctl"), "-D", data, "-o", options, "-l",
                             os.path.join(root, "log"), "-w", "-t", "60", "start"], check=True, capture_output=True)
    subprocess.run(run_as + [os.path.join(bindir, "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "portal",
                             database], check=True, capture_output=True)
    return PgServer(f"postgresql://portal@127.0.0.1:{port}/{database}", data, bindir, run_as)
