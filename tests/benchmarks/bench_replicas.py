"""Replicas of the inprocess-proxy command sharing a route table in Redis (``--route-store``).

    python tests/benchmarks/bench_replicas.py          # about a minute; CHP if node_modules has it

Starts Debian's redis-server, nginx (``/small``, 100 B), three replicas with
``--route-store redis://...``, one ``memory`` command without it, and
configurable-http-proxy 5.3.0 if ``--node-modules`` holds it (``setup.sh``),
all on free 127.0.0.1 ports, and prints:

* **propagation**: a route added (and deleted) through replica 0's REST API,
  timed from the API's answer until replicas 1 and 2 serve it (their public
  ports polled on keep-alive connections, so the resolution is one request,
  about 0.1-0.3 ms); p50, p99, max;
* **REST add / delete latency**: sequential calls on one keep-alive
  connection, wall time per call, for ``memory``, a replica and CHP,
  interleaved per repetition, while the replica runs alone; then the
  replica's again with all three running (on a 2-core machine the others,
  applying each change, compete with it for the cores); p50, p99;
* **throughput and CPU per request**: ``wrk -c10`` on ``/small`` through a
  replica (the others running, activity merged every second) and through
  ``memory``, paired per repetition; the ratio is the median of the
  per-repetition ratios.

Goals (from issue 14): propagation p99 <= 50 ms; add through the store p50 <=
CHP's add p50; replica throughput >= 0.95x one in-memory replica. Never
asserts; prints PASS/FAIL per goal and exits 0 unless something crashed.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import _tests_on_path  # noqa: F401
from _backends import start_nginx
from _candidates import HERE, REPO_ROOT, STARTUP_TIMEOUT_SECONDS, chp_command, standalone_command
from _load import run_wrk, write_wrk_script
from _procs import ChildProcesses, stop_on_sigterm
from support.ports import free_port, free_ports, http_status, port_accepts
from support.procfs import cpu_seconds
from support.processes import StartupError, wait_until

REDIS_SERVER = "/usr/bin/redis-server"
REPLICAS = 3
#: seconds one propagation may take before the benchmark gives up on it
PROPAGATION_TIMEOUT = 5
GOALS = {
    "propagation p99 ms": ("<=", 50.0),
    "store add p50 / CHP add p50": ("<=", 1.0),
    "replica rps / memory rps": (">=", 0.95),
}


class Command:
    """One CHP-like process: its ports, token, pid, and a keep-alive REST client."""

    def __init__(self, procs, name, argv, env, extra=()):
        self.name = name
        self.port, self.api_port = free_ports(2)
        self.token = uuid.uuid4().hex
        argv = argv + ["--ip", "127.0.0.1", "--port", str(self.port),
                       "--api-ip", "127.0.0.1", "--api-port", str(self.api_port), *extra]  # fmt: skip
        self.proc = procs.start(name, argv, env=dict(env, CONFIGPROXY_AUTH_TOKEN=self.token))
        wait_until(
            lambda: port_accepts(self.port) and port_accepts(self.api_port)
            and http_status(f"http://127.0.0.1:{self.port}/_chp_healthz") == 200,
            timeout=STARTUP_TIMEOUT_SECONDS, what=name, process=self.proc,
        )  # fmt: skip
        self.api = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=10)
        self.public = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    @property
    def pid(self):
        return self.proc.pid

    def call(self, method, path, body=None):
        """One REST call on the keep-alive connection; returns (status, seconds)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}
        started = time.perf_counter()
        self.api.request(method, "/api/routes" + path, body=data, headers=headers)
        response = self.api.getresponse()
        response.read()
        return response.status, time.perf_counter() - started

    def get(self, path):
        """GET path on the public port (keep-alive); returns the status."""
        return self.get_response(path).status

    def get_response(self, path):
        self.public.request("GET", path)
        response = self.public.getresponse()
        response.read()
        if response.will_close:
            self.public.close()
        return response

    def routed_to_nginx(self, path):
        """Whether nginx answered ``path`` (its Server header), not the proxy itself."""
        return (self.get_response(path).getheader("Server") or "").startswith("nginx")


def quantiles(values):
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
    }


def measure_propagation(writer, readers, count, target):
    """Seconds from the writer's answer until each reader serves (add) or stops serving (delete) a route."""
    added, deleted = [], []
    for i in range(count):
        path = f"/prop/{i}"
        for samples, method, body, before in (
            (added, "POST", {"target": target}, False),
            (deleted, "DELETE", None, True),
        ):
            status, _ = writer.call(method, path, body)
            assert status in (201, 204), (method, path, status)
            answered = time.perf_counter()
            for reader in readers:
                # no route: the proxy's own 404; routed: nginx's answer (a 404 too, with its Server header)
                while reader.routed_to_nginx(path) == before:
                    if time.perf_counter() - answered > PROPAGATION_TIMEOUT:
                        raise RuntimeError(f"{method} {path} not seen by {reader.name} in {PROPAGATION_TIMEOUT} s")
                samples.append(time.perf_counter() - answered)
    return added, deleted


def measure_rest(candidates, count, reps):
    """{name: {"add": [s], "delete": [s]}}: sequential adds then deletes, candidates interleaved per repetition."""
    times = {c.name: {"add": [], "delete": []} for c in candidates}
    for rep in range(reps):
        order = candidates[rep % len(candidates):] + candidates[: rep % len(candidates)]
        for candidate in order:
            for i in range(count):
                status, seconds = candidate.call("POST", f"/user/bench-{rep}-{i}", {"target": "http://127.0.0.1:9"})
                assert status == 201, (candidate.name, status)
                times[candidate.name]["add"].append(seconds)
            for i in range(count):
                status, seconds = candidate.call("DELETE", f"/user/bench-{rep}-{i}")
                assert status == 204, (candidate.name, status)
                times[candidate.name]["delete"].append(seconds)
    return times


def measure_throughput(pairs, seconds, reps, script):
    """{name: [(rps, cpu us/req)]} per repetition, the candidates' order alternating."""
    results = {c.name: [] for c in pairs}
    for rep in range(reps):
        for candidate in pairs if rep % 2 == 0 else list(reversed(pairs)):
            cpu_before = cpu_seconds(candidate.pid)
            load = run_wrk(f"http://127.0.0.1:{candidate.port}/small", connections=10, seconds=seconds, script=script)
            cpu = cpu_seconds(candidate.pid) - cpu_before
            if load.problems:
                raise RuntimeError(f"{candidate.name}: {'; '.join(load.problems)}")
            results[candidate.name].append((load.rps, cpu / load.requests * 1e6))
    return results


def goal_line(name, value):
    op, limit = GOALS[name]
    ok = value <= limit if op == "<=" else value >= limit
    return f"  {name:<30} {value:>9.3f}  goal {op} {limit:<6g} {'PASS' if ok else 'FAIL'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=200, help="routes per propagation run")
    parser.add_argument("--rest-calls", type=int, default=200, help="adds (and deletes) per candidate and repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the REST and throughput runs")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument(
        "--node-modules", default=os.path.join(HERE, "node_modules"), help="where CHP is installed (setup.sh)"
    )
    parser.add_argument("--no-chp", action="store_true", help="skip configurable-http-proxy")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    args = parser.parse_args()
    stop_on_sigterm()
    if not os.access(REDIS_SERVER, os.X_OK):
        sys.exit(f"{REDIS_SERVER} is missing: apt-get install redis-server")
    root = tempfile.mkdtemp(prefix="bench-replicas-")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
    with ChildProcesses(root) as procs:
        nginx = f"http://127.0.0.1:{start_nginx(procs, root)}"
        redis_port = free_port()
        redis = procs.start(
            "redis-server",
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no",
             "--dir", root],
        )  # fmt: skip
        wait_until(lambda: port_accepts(redis_port), timeout=STARTUP_TIMEOUT_SECONDS, what="redis", process=redis)
        store = ["--route-store", f"redis://127.0.0.1:{redis_port}/0"]
        # no --default-target on the replicas yet: an unrouted path is the proxy's own 404
        replicas = [Command(procs, "replica0", standalone_command(), env, store)]
        memory = Command(procs, "memory", standalone_command(), env, ["--default-target", nginx])
        chp = None
        if not args.no_chp:
            try:
                chp = Command(procs, "chp", chp_command(args.node_modules), env, ["--default-target", nginx])
            except StartupError as e:
                print(f"configurable-http-proxy skipped: {e}")
        # REST latency with one replica, then with three: on a small machine the other replicas
        # applying each change compete with the one that takes it for the same cores
        rest = measure_rest([c for c in (memory, replicas[0], chp) if c], args.rest_calls, args.reps)
        replicas += [Command(procs, f"replica{i}", standalone_command(), env, store) for i in range(1, REPLICAS)]
        rest["replica0 of 3"] = measure_rest([replicas[0]], args.rest_calls, args.reps)["replica0"]

        added, deleted = measure_propagation(replicas[0], replicas[1:], args.routes, nginx)
        status, _ = replicas[0].call("POST", "/", {"target": nginx})
        assert status == 201, status
        for replica in replicas:
            wait_until(lambda: replica.get("/small") == 200, timeout=10, what=f"/ on {replica.name}")
        script = write_wrk_script(os.path.join(root, "wrk.lua"))
        load = measure_throughput([memory, replicas[1]], args.seconds, args.reps, script)
    # kept after a crash (the exception skips this), as bench_http keeps its logs
    if args.keep_logs:
        print(f"logs in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nRoute propagation, replica0's REST API -> replicas 1 and 2 serving it ({args.routes} routes, ms):")
    for what, samples in (("add", added), ("delete", deleted)):
        q = quantiles(samples)
        print(f"  {what:<7} p50 {q['p50'] * 1e3:7.2f}  p99 {q['p99'] * 1e3:7.2f}  max {q['max'] * 1e3:7.2f}")
    print(f"\nREST latency, one keep-alive connection, {args.rest_calls} calls x {args.reps} reps (ms):")
    for name, ops in rest.items():
        label = {
            "memory": "memory (no store)",
            "replica0": "replica alone (Redis)",
            "replica0 of 3": "replica, 3 running",
            "chp": "CHP 5.3.0",
        }[name]
        a, d = quantiles(ops["add"]), quantiles(ops["delete"])
        print(
            f"  {label:<22} add p50 {a['p50'] * 1e3:6.2f} p99 {a['p99'] * 1e3:6.2f}"
            f"   delete p50 {d['p50'] * 1e3:6.2f} p99 {d['p99'] * 1e3:6.2f}"
        )
    print(f"\nThroughput, wrk -c10 {args.seconds} s on /small (100 B), {args.reps} paired reps:")
    for name, runs in load.items():
        rps = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"  {name:<10} {rps:8.0f} req/s   {cpu:6.1f} us CPU/req")
    ratios = [r[0] / m[0] for r, m in zip(load["replica1"], load["memory"])]
    cpu_ratios = [r[1] / m[1] for r, m in zip(load["replica1"], load["memory"])]
    print(f"  replica/memory: rps x{statistics.median(ratios):.3f}, CPU/req x{statistics.median(cpu_ratios):.3f}")
    print("\nGoals:")
    print(goal_line("propagation p99 ms", quantiles(added)["p99"] * 1e3))
    if "chp" in rest:
        print(goal_line(
            "store add p50 / CHP add p50",
            statistics.median(rest["replica0"]["add"]) / statistics.median(rest["chp"]["add"]),
        ))  # fmt: skip
    print(goal_line("replica rps / memory rps", statistics.median(ratios)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
