"""Time the route table and the Hub's route API, with configurable-http-proxy's for comparison.

    pip install -e .                              # imports inprocess_proxy from this interpreter
    python tests/benchmarks/bench_routes.py       # about a minute with CHP, seconds without

Figures, each the median over ``--repeats`` runs of many operations, timed
in CPU time of this thread (``time.thread_time_ns``, so that other processes
on a shared machine do not inflate them) while the garbage collector is off
(as timeit does), for tables of 1,000 and 10,000 user routes plus ``/``:

* ``RouteTrie.add`` and ``.remove``: per operation, adding ``--batch`` new
  routes to the full table, then removing them;
* ``RouteTrie.match_request``: per lookup, on ``/user/uN/lab/tree/x.ipynb``
  paths, one in ten for a user with no route (falling through to ``/``);
* ``await InProcessProxy.add_route`` / ``delete_route``: the whole Hub-facing
  path (``validate_routespec``, target parsing, the trie);
* ``await InProcessProxy.get_all_routes()``: every route has activity that
  changed since the last listing (the worst case, which formats every
  timestamp), and for context the same listing again with nothing changed.
  The previous listing is freed before the timer starts, for CHP too: the
  figure is the call the Hub awaits, not the Hub dropping its last result.

If CHP is installed (``tests/benchmarks/setup.sh``, or
``npm install --prefix tests/benchmarks configurable-http-proxy@5.3.0``, or
``configurable-http-proxy`` on PATH) it is started on free 127.0.0.1 ports and
driven through JupyterHub's own ``ConfigurableHTTPProxy`` class
(``should_start=False``), so its figures are exactly what the Hub awaits:
aiohttp with JupyterHub's shared session, JSON, and reformatting. The
standalone ``inprocess-proxy`` command (this checkout's) is driven the same
way, and the two are compared in a second table. CPU time of this thread
counts only the client's share of a REST call, so that table also has the
wall-clock median of single ``add_route`` calls (``add_route wall p50``):
what the Hub waits, client and proxy together.

Never asserts; prints PASS/FAIL per goal and exits 0 unless something crashed.
"""

import argparse
import asyncio
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import _tests_on_path  # noqa: F401
from _candidates import HERE, REPO_ROOT, STARTUP_TIMEOUT_SECONDS, chp_command, standalone_command
from _procs import ChildProcesses
from support.ports import free_port, port_accepts
from support.processes import StartupError, wait_until

from inprocess_proxy import InProcessProxy
from inprocess_proxy.routes import RouteTrie

SIZES = (1_000, 10_000)
TARGET = "http://127.0.0.1:8888"
#: share of lookups for users without a route, answered by "/" (the Hub)
FALLTHROUGH_SHARE = 0.1
#: seconds the CHP part may take in all before it is abandoned
CHP_BUDGET_SECONDS = 120
#: simultaneous requests while filling CHP (JupyterHub's ConfigurableHTTPProxy.concurrency default)
CHP_FILL_CONCURRENCY = 10

# Goals from the project's performance issue, on InProcessProxy's figures,
# and from the standalone command's issue, as its ratio to CHP's.
REST_GOALS = {"add_route wall p50": ("<=", 0.5)}
US, MS = 1e3, 1e6  # ns per unit
GOALS = {
    ("trie add", None): ("<=", 10 * US),
    ("trie remove", None): ("<=", 10 * US),
    ("add_route", None): ("<=", 10 * US),
    ("delete_route", None): ("<=", 10 * US),
    ("lookup", 10_000): ("<=", 2 * US),
    # the goal names no activity pattern: both ends are held to it
    ("get_all_routes", 10_000): ("<=", 10 * MS),
    ("get_all_routes, unchanged", 10_000): ("<=", 10 * MS),
}


def user_spec(name):
    return f"/user/{name}/"


def user_data(name):
    return {"user": name, "server_name": ""}


def lookup_paths(size, count, rng):
    """Request paths for users 0..size-1, FALLTHROUGH_SHARE of them for users without a route."""
    paths = []
    for _ in range(count):
        if rng.random() < FALLTHROUGH_SHARE:
            paths.append(f"/user/stopped{rng.randrange(size)}/lab/tree/x.ipynb")
        else:
            paths.append(f"/user/u{rng.randrange(size)}/lab/tree/x.ipynb")
    return paths


class Timer:
    """Per-operation nanoseconds of repeated runs; ``median`` is the figure."""

    def __init__(self):
        self.samples = []

    def __enter__(self):
        gc.disable()
        self.started = time.thread_time_ns()
        return self

    def record(self, operations):
        self.samples.append((time.thread_time_ns() - self.started) / operations)
        gc.enable()

    def __exit__(self, *exc_info):
        gc.enable()

    @property
    def median(self):
        return statistics.median(self.samples)


def time_trie(size, batch, lookups, repeats, rng):
    """{operation: ns} for RouteTrie add, remove and lookup with `size` routes."""
    trie = RouteTrie()
    trie.add("/", TARGET, {"hub": True}, 0.0)
    for i in range(size):
        trie.add(user_spec(f"u{i}"), TARGET, user_data(f"u{i}"), 0.0)
    extra = [(user_spec(f"new{i}"), user_data(f"new{i}")) for i in range(batch)]
    paths = lookup_paths(size, lookups, rng)
    add, remove, lookup = Timer(), Timer(), Timer()
    for _ in range(repeats):
        with add:
            for spec, data in extra:
                trie.add(spec, TARGET, data, 0.0)
            add.record(batch)
        with remove:
            for spec, _ in extra:
                trie.remove(spec)
            remove.record(batch)
        match_request = trie.match_request
        with lookup:
            for path in paths:
                match_request(path)
            lookup.record(lookups)
    assert len(trie) == size + 1
    return {"trie add": add.median, "trie remove": remove.median, "lookup": lookup.median}


async def time_inprocess(size, batch, repeats):
    """{operation: ns} for InProcessProxy's route API with `size` routes."""
    proxy = InProcessProxy()
    await proxy.add_route("/", TARGET, {"hub": True})
    for i in range(size):
        await proxy.add_route(user_spec(f"u{i}"), TARGET, user_data(f"u{i}"))
    specs = [user_spec(f"new{i}") for i in range(batch)]
    add, delete, listing, unchanged = Timer(), Timer(), Timer(), Timer()
    for _ in range(repeats):
        with add:
            for spec in specs:
                await proxy.add_route(spec, TARGET, user_data(spec))
            add.record(batch)
        with delete:
            for spec in specs:
                await proxy.delete_route(spec)
            delete.record(batch)
    for repeat in range(repeats):
        # every route saw traffic since the last listing, each at its own time
        now = time.time() + repeat
        proxy.activity.last.update((route.routespec, now + i * 1e-3) for i, route in enumerate(proxy.routes))
        routes = again = None  # freed here, not inside the timed calls
        with listing:
            routes = await proxy.get_all_routes()
            listing.record(1)
        with unchanged:
            again = await proxy.get_all_routes()
            unchanged.record(1)
        assert again == routes
    assert len(routes) == size + 1 and all("last_activity" in r["data"] for r in routes.values())
    return {
        "add_route": add.median,
        "delete_route": delete.median,
        "get_all_routes": listing.median,
        "get_all_routes, unchanged": unchanged.median,
    }


# -- configurable-http-proxy ---------------------------------------------------


def find_chp():
    """argv prefix that runs CHP, or None."""
    node_modules = os.path.join(HERE, "node_modules")
    try:
        return chp_command(node_modules)
    except StartupError:
        pass
    on_path = shutil.which("configurable-http-proxy")
    return [on_path] if on_path else None


async def fill_chp(chp, specs):
    async def add(spec):
        await chp.add_route(spec, TARGET, user_data(spec))

    for start in range(0, len(specs), CHP_FILL_CONCURRENCY * 10):
        await asyncio.gather(*(add(spec) for spec in specs[start : start + CHP_FILL_CONCURRENCY * 10]))


async def time_chp_api(chp, size, batch, repeats):
    """{operation: ns} for ConfigurableHTTPProxy's route API; the proxy already holds `size` routes."""
    specs = [user_spec(f"new{i}") for i in range(batch)]
    for spec in specs:  # warm-up: connections, node's JIT
        await chp.add_route(spec, TARGET, user_data(spec))
        await chp.delete_route(spec)
    add, delete, listing = Timer(), Timer(), Timer()
    add_walls = []
    for _ in range(repeats):
        with add:
            for spec in specs:
                started = time.perf_counter_ns()
                await chp.add_route(spec, TARGET, user_data(spec))
                add_walls.append(time.perf_counter_ns() - started)
            add.record(batch)
        with delete:
            for spec in specs:
                await chp.delete_route(spec)
            delete.record(batch)
        routes = None  # freed here, not inside the timed call
        with listing:
            routes = await chp.get_all_routes()
            listing.record(1)
    assert len(routes) == size + 1, len(routes)
    return {
        "add_route": add.median,
        "add_route wall p50": statistics.median(add_walls),
        "delete_route": delete.median,
        "get_all_routes": listing.median,
    }


async def time_chp(argv, batch, repeats, env=None, name="chp"):
    """{size: {operation: ns}} for CHP (or a command taking its flags), started here on free ports."""
    from jupyterhub.httpclient import JupyterHubHTTPClient
    from jupyterhub.proxy import ConfigurableHTTPProxy

    port, api_port = free_port(), free_port()
    token = uuid.uuid4().hex
    argv = argv + [
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-ip",
        "127.0.0.1",
        "--api-port",
        str(api_port),
    ]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-routes-") as log_dir, ChildProcesses(log_dir) as procs:
        proc = procs.start(name, argv, env=dict(env or os.environ, CONFIGPROXY_AUTH_TOKEN=token))
        wait_until(lambda: port_accepts(api_port), timeout=STARTUP_TIMEOUT_SECONDS, what=f"{name} API", process=proc)
        chp = ConfigurableHTTPProxy(
            should_start=False, api_url=f"http://127.0.0.1:{api_port}", auth_token=token
        )
        try:
            await chp.add_route("/", TARGET, {"hub": True})
            filled = 0
            for size in SIZES:
                await fill_chp(chp, [user_spec(f"u{i}") for i in range(filled, size)])
                filled = size
                results[size] = await time_chp_api(chp, size, batch, repeats)
        finally:
            await JupyterHubHTTPClient.loop_instance().close()
    return results


# -- report ----------------------------------------------------------------------


def show(ns):
    if ns is None:
        return "-"
    if ns >= MS:
        return f"{ns / MS:.2f} ms"
    return f"{ns / US:.2f} us"


def ratio(theirs, ours):
    if not theirs:
        return "-"
    times = theirs / ours
    return f"{times:.1f}x" if times < 10 else f"{times:.0f}x"


def goal_for(operation, size):
    return GOALS.get((operation, size)) or GOALS.get((operation, None))


def verdict(value, goal):
    """PASS or FAIL of ``value`` against ``goal`` = ``(op, limit)``; "" without either."""
    if goal is None or value is None:
        return ""
    op, limit = goal
    return "PASS" if (value <= limit if op == "<=" else value >= limit) else "FAIL"


def print_rows(header, rows):
    """An aligned text table."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def print_rest_table(chp, standalone):
    """CHP's REST API next to the standalone command's, both through ConfigurableHTTPProxy."""
    header = ("REST operation", "routes", "CHP", "standalone", "standalone/CHP", "goal", "result")
    rows = []
    for size, figures in standalone.items():
        for operation, ns in figures.items():
            theirs = chp.get(size, {}).get(operation) if chp else None
            goal = REST_GOALS.get(operation)
            ratio_to_chp = ns / theirs if theirs else None
            rows.append(
                (
                    operation,
                    f"{size:,}",
                    show(theirs),
                    show(ns),
                    "-" if ratio_to_chp is None else f"{ratio_to_chp:.2f}x",
                    f"{goal[0]} {goal[1]:g}x CHP" if goal else "",
                    verdict(ratio_to_chp, goal),
                )
            )
    print_rows(header, rows)


def print_table(ours, chp):
    header = ("operation", "routes", "inprocess", "CHP", "CHP/inproc", "goal", "result")
    rows = []
    for size, figures in ours.items():
        for operation, ns in figures.items():
            theirs = chp.get(size, {}).get(operation) if chp else None
            goal = goal_for(operation, size)
            result = verdict(ns, goal)
            rows.append(
                (
                    operation,
                    f"{size:,}",
                    show(ns),
                    show(theirs),
                    ratio(theirs, ns),
                    f"{goal[0]} {show(goal[1])}" if goal else "",
                    result,
                )
            )
    print_rows(header, rows)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure; the median is shown")
    parser.add_argument("--batch", type=int, default=1_000, help="routes added and removed per run")
    parser.add_argument("--lookups", type=int, default=20_000, help="lookups per run")
    parser.add_argument("--chp-repeats", type=int, default=3, help="runs per CHP figure")
    parser.add_argument("--chp-batch", type=int, default=100, help="routes added and removed per CHP run")
    parser.add_argument("--no-chp", action="store_true", help="skip configurable-http-proxy")
    parser.add_argument(
        "--no-standalone", action="store_true", help="skip the standalone inprocess-proxy command's REST API"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the lookup paths")
    return parser.parse_args()


async def main(args):
    rng = random.Random(args.seed)
    ours = {}
    for size in SIZES:
        ours[size] = time_trie(size, args.batch, args.lookups, args.repeats, rng)
        ours[size].update(await time_inprocess(size, args.batch, args.repeats))
    chp = None
    argv = None if args.no_chp else find_chp()
    if argv is None and not args.no_chp:
        print(
            "CHP not found: for a comparison, run"
            " `npm install --prefix tests/benchmarks configurable-http-proxy@5.3.0`"
        )
    elif argv is not None:
        try:
            chp = await asyncio.wait_for(time_chp(argv, args.chp_batch, args.chp_repeats), CHP_BUDGET_SECONDS)
        except (StartupError, asyncio.TimeoutError, OSError) as e:
            print(f"CHP skipped: {type(e).__name__}: {e}")
    standalone = None
    if not args.no_standalone:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
        try:
            standalone = await asyncio.wait_for(
                time_chp(standalone_command(), args.chp_batch, args.chp_repeats, env, "standalone"), CHP_BUDGET_SECONDS
            )
        except (StartupError, asyncio.TimeoutError, OSError) as e:
            print(f"standalone skipped: {type(e).__name__}: {e}")
    print(
        f"python {sys.version.split()[0]}, repeats {args.repeats} (REST {args.chp_repeats}),"
        f" batch {args.batch} (REST {args.chp_batch}), {args.lookups} lookups per run"
    )
    print_table(ours, chp)
    if standalone:
        print()
        print_rest_table(chp, standalone)


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main(parse_args()))
    print(f"total {time.monotonic() - started:.0f} s")
