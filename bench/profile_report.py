"""Read py-spy's raw (collapsed) profiles of the portal's workers and print where the time goes:
by package (own time), the portal's own functions (inclusive time), and the hottest functions (own time).

    .venv/bin/python -m bench.profile_report PROFILE.txt [PROFILE.txt ...] [--top N]

The profiles come from `bench/run.py --profile checkout,lookup_phone --keep` (one file per worker and scenario;
give all the files of one scenario together). Percentages are of all samples of the files given.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

STDLIB = {"concurrent", "json", "email", "http", "logging", "importlib", "encodings", "urllib", "collections",
          "asyncio", "xml", "zoneinfo", "sqlite3", "ctypes", "multiprocessing", "<frozen genericpath>"}
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def package_of(path: str) -> str:
    """A short name for where a file lives: the portal, its templates, or a library's top-level package.
    py-spy names files relative to their sys.path entry (sqlalchemy/orm/session.py, threading.py)."""
    path = short(path)
    if path.endswith(".html"):
        return "templates"
    if "/" not in path:
        return "stdlib" if path.endswith(".py") or path.startswith("<") else path
    top = path.split("/", 1)[0]
    return "stdlib" if top in STDLIB else top


DRIVER_CALLS = {"DefaultDialect.do_execute", "DefaultDialect.do_executemany", "DefaultDialect.do_commit",
                "DefaultDialect.do_rollback", "CursorFetchStrategy.fetchall", "CursorFetchStrategy.fetchone",
                "CursorFetchStrategy.fetchmany"}


def frames_of(stack: str) -> list[tuple[str, str]]:
    found = []
    for raw in stack.split(";"):
        match = FRAME.match(raw.strip())
        if match:
            found.append((match.group("function"), match.group("file")))
        else:
            found.append((raw.strip(), ""))
    return found


def short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total = 0
    own_package: Counter = Counter()
    own_function: Counter = Counter()
    inclusive_portal: Counter = Counter()
    inclusive_any: Counter = Counter()
    database_by_caller: Counter = Counter()
    for path in args.files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            samples = int(count)
            frames = frames_of(stack)
            if not frames:
                continue
            total += samples
            function, file = frames[-1]
            own_package[package_of(file)] += samples
            own_function[f"{function} ({short(file)})"] += samples
            if function in DRIVER_CALLS or package_of(file) in ("sqlite3", "psycopg"):
                nearest = next((f"{fn} ({short(fl)})" for fn, fl in reversed(frames)
                                if package_of(fl) in ("portal", "templates")), "(outside the portal)")
                database_by_caller[nearest] += samples
            seen = set()
            for function, file in frames:
                key = f"{function} ({short(file)})"
                if key in seen:
                    continue
                seen.add(key)
                inclusive_any[key] += samples
                if package_of(file) in ("portal", "templates"):
                    inclusive_portal[key] += samples
    if not total:
        raise SystemExit("no samples in the files given")

    def show(title: str, counts: Counter, top: int) -> None:
        print(f"\n{title}")
        for key, samples in counts.most_common(top):
            print(f"  {100 * samples / total:5.1f}%  {key}")

    print(f"{total} samples from {len(args.files)} file(s)")
    show("Own time by package", own_package, args.top)
    show("The portal's functions, inclusive time", inclusive_portal, args.top)
    show("All functions, inclusive time", inclusive_any, args.top)
    show("Hottest functions, own time", own_function, args.top)
    show("Time in the database driver (DBAPI execute, fetch, commit, rollback), by the portal function or "
         "template nearest to it", database_by_caller, args.top)


if __name__ == "__main__":
    main()
