"""A Python load generator for when wrk is not installed: the same scenario files as bench/wrk.lua, the same
result. One process per connection (so the generator is not held back by one GIL), each with one keep-alive
http.client connection, sending its next request as soon as the last answer is read (as wrk does).

    python -m bench.loadgen SCENARIO_FILE PORT CONNECTIONS SECONDS KEY_PREFIX
prints "BENCH_RESULT {json}" like wrk.lua.
"""
from __future__ import annotations

import http.client
import json
import multiprocessing
import sys
import time


def read_scenario(path: str) -> dict:
    scenario = {"expected": 200, "headers": {}, "creds": [], "items": []}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if fields[0] == "E":
                scenario["expected"] = int(fields[1])
            elif fields[0] == "H":
                scenario["headers"][fields[1]] = fields[2]
            elif fields[0] == "C":
                scenario["creds"].append((fields[1], fields[2] if len(fields) > 2 else ""))
            elif fields[0] == "R":
                scenario["items"].append((fields[1], fields[2], fields[3] if len(fields) > 3 else ""))
    if not scenario["items"]:
        raise SystemExit(f"no requests in {path}")
    return scenario


def _connection_loop(scenario: dict, port: int, number: int, connections: int, start_at: float, seconds: float,
                     key_prefix: str, out) -> None:
    items, creds = scenario["items"], scenario["creds"]
    counter = len(items) * number // connections
    turn = number
    latencies: list[float] = []
    unexpected, statuses, received, errors = 0, [], 0, {"connect": 0, "read": 0, "write": 0, "status": 0,
                                                         "timeout": 0}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    while time.monotonic() < deadline:
        counter += 1
        method, path, body = items[counter % len(items)]
        headers = dict(scenario["headers"])
        if creds:
            turn += 1
            cookie, token = creds[turn % len(creds)]
            headers["Cookie"] = cookie
            if token:
                headers["X-CSRFToken"] = token
        payload = None
        if body:
            payload = body.replace("@KEY@", f"{key_prefix}c{number}n{counter}").encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        began = time.perf_counter()
        try:
            connection.request(method, path, body=payload, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
        except TimeoutError:
            errors["timeout"] += 1
            connection.close()
            continue
        except (OSError, http.client.HTTPException):
            errors["read"] += 1
            connection.close()  # http.client reconnects on the next request
            continue
        latencies.append(time.perf_counter() - began)
        received += len(data)
        if answer.status > 399:  # what wrk counts as a status error
            errors["status"] += 1
        if answer.status != scenario["expected"]:
            unexpected += 1
            if len(statuses) < 30:
                statuses.append(str(answer.status))
        if answer.will_close:
            connection.close()
    connection.close()
    out.put({"latencies": latencies, "unexpected": unexpected, "statuses": statuses, "bytes": received,
             "errors": errors})


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, int(round(share * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def run(scenario_path: str, port: int, connections: int, seconds: float, key_prefix: str) -> dict:
    scenario = read_scenario(scenario_path)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    start_at = time.monotonic() + 0.5
    workers = [context.Process(target=_connection_loop,
                               args=(scenario, port, n, connections, start_at, seconds, key_prefix, out))
               for n in range(connections)]
    for worker in workers:
        worker.start()
    parts = [out.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = sorted(value for part in parts for value in part["latencies"])
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    for part in parts:
        for name, count in part["errors"].items():
            errors[name] += count
    return {
        "requests": len(latencies), "duration_us": int(seconds * 1e6),
        "p50_us": int(_percentile(latencies, 0.50) * 1e6), "p90_us": int(_percentile(latencies, 0.90) * 1e6),
        "p99_us": int(_percentile(latencies, 0.99) * 1e6), "max_us": int((latencies[-1] if latencies else 0) * 1e6),
        "mean_us": (sum(latencies) / len(latencies) * 1e6) if latencies else 0.0,
        "errors": errors, "unexpected": sum(part["unexpected"] for part in parts),
        "unexpected_statuses": " ".join(s for part in parts for s in part["statuses"]),
        "bytes": sum(part["bytes"] for part in parts), "answers": len(latencies),
    }


if __name__ == "__main__":
    path, port, connections, seconds, prefix = sys.argv[1:6]
    print("BENCH_RESULT " + json.dumps(run(path, int(port), int(connections), float(seconds), prefix)), flush=True)
