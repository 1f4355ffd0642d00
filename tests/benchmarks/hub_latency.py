"""Hub API latency while the proxy in the Hub's process forwards ~1,000 req/s.

InProcessProxy shares the Hub's event loop, so proxied traffic can delay the
Hub's own API. This starts a real JupyterHub (``python -m jupyterhub``) with
``c.JupyterHub.proxy_class = "inprocess"`` and ``c.Proxy.extra_routes``
sending ``/bench/`` to nginx, then times ``GET /hub/api/`` on the Hub's own
port (``hub_bind_url``, not through the proxy) twice per repetition:

* idle: nothing else running;
* loaded: wrk sends a paced ~1,000 req/s through the proxy's public port
  to ``/bench/small`` while the same probe runs.

The probe is wrk too (one connection, paced to ``--hub-probe-rate``), so its
percentiles come from the same histogram as every other figure. The goal is
p99 loaded / p99 idle of the same Hub. The same is done with the Hub's default
proxy (CHP 5.3.0 from node_modules, a separate process) for context.

Run alone: ``python tests/benchmarks/hub_latency.py`` (it starts nginx itself);
``bench_http.py`` runs it as its last test.
"""

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import _tests_on_path  # noqa: F401
from _backends import start_nginx
from _candidates import chp_command
from _load import run_wrk, write_wrk_script
from _procs import ChildProcesses, stop_on_sigterm
from _report import format_table, rotated, table_rows
from support.hub import HubProcess
from support.ports import http_status
from support.procfs import cpu_seconds, tree_rss_kib
from support.processes import StartupError

HERE = os.path.dirname(os.path.abspath(__file__))
# The load starts this long before the probe and ends this long after it, so
# the whole probe window sees the full load rate; nothing is timed for this long after it.
LOAD_MARGIN_SECONDS = 1
PROXY_CLASSES = {"inprocess": "inprocess", "chp": "configurable-http-proxy"}

HUB_CONFIG = """\
c.JupyterHub.authenticator_class = "dummy"
c.Proxy.extra_routes = {{"/bench/": {backend_url!r}}}
"""


@dataclass
class HubOptions:
    """How long and how hard the Hub test runs."""

    seconds: int = 10
    reps: int = 3
    # Unrecorded probe-under-load per Hub first: its first seconds are slower (imports, caches, CHP's JIT).
    warmup_seconds: int = 2
    load_rate: int = 1000
    # Connections the paced load is spread over: enough to keep to the rate
    # when a response takes up to load_connections / load_rate seconds.
    load_connections: int = 50
    probe_rate: int = 100
    api_path: str = "/hub/api/"


@dataclass
class RunningHub:
    name: str
    process: HubProcess
    rss_mb: float


def start_hub(root, name, backend_url, node_modules):
    """A JupyterHub with the named proxy, ready when its API and the /bench/ route answer."""
    hub = HubProcess(
        os.path.join(root, f"hub-{name}"),
        proxy_class=PROXY_CLASSES[name],
        config=HUB_CONFIG.format(backend_url=backend_url),
        chp_command=chp_command(node_modules) if name == "chp" else None,
        name=f"hub-{name}",
    )

    def ready():
        return http_status(hub.hub_url + "/hub/health") == 200 and http_status(hub.public_url + "/bench/small") == 200

    hub.start(ready=ready)
    return RunningHub(name, hub, rss_mb=tree_rss_kib(hub.pid) / 1024)


@dataclass
class WrkScripts:
    probe: str
    load: str


def write_scripts(root, opts):
    """Paced wrk scripts: the probe at probe_rate, the load at load_rate (both run one wrk thread)."""
    return WrkScripts(
        probe=write_wrk_script(os.path.join(root, "hub-probe.lua"), rate=opts.probe_rate),
        load=write_wrk_script(os.path.join(root, "hub-load.lua"), rate=opts.load_rate),
    )


def _probe(hub, opts, scripts):
    """Time the Hub API for opts.seconds; returns (LoadResult, Hub CPU % during it)."""
    pid = hub.process.pid
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    result = run_wrk(hub.process.hub_url + opts.api_path, connections=1, seconds=opts.seconds, script=scripts.probe)
    cpu_percent = 100 * (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
    return result, cpu_percent


def _probe_under_load(hub, opts, scripts):
    """Probe while a paced load goes through the proxy; returns (probe, Hub CPU %, load)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(
            run_wrk,
            hub.process.public_url + "/bench/small",
            connections=opts.load_connections,
            seconds=opts.seconds + 2 * LOAD_MARGIN_SECONDS,
            script=scripts.load,
        )
        time.sleep(LOAD_MARGIN_SECONDS)
        probe, cpu_percent = _probe(hub, opts, scripts)
        load_result = load.result()
    # Let the proxy close the load's connections before anything else is timed.
    time.sleep(LOAD_MARGIN_SECONDS)
    return probe, cpu_percent, load_result


PHASES = {"idle": _probe, "loaded": _probe_under_load}


def _ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def measure_hub(hub, rep, opts, scripts):
    """One repetition: idle and loaded probes, in an order that alternates per repetition."""
    phases = {phase: PHASES[phase](hub, opts, scripts) for phase in rotated(list(PHASES), rep)}
    idle, idle_cpu = phases["idle"]
    loaded, loaded_cpu, load = phases["loaded"]
    runs = {"idle probe": idle, "loaded probe": loaded, "load": load}
    errors = [f"{what}: {run.error}" for what, run in runs.items() if run.error]
    return {
        "test": "hub_api",
        "candidate": hub.name,
        "rep": rep,
        "idle_p50_ms": idle.p50_ms,
        "idle_p99_ms": idle.p99_ms,
        "loaded_p50_ms": loaded.p50_ms,
        "loaded_p99_ms": loaded.p99_ms,
        "p99_loaded_over_idle": _ratio(loaded.p99_ms, idle.p99_ms),
        "probe_requests": [idle.requests, loaded.requests],
        "load_rps": load.rps,
        "hub_cpu_idle_pct": idle_cpu,
        "hub_cpu_loaded_pct": loaded_cpu,
        "hub_and_proxy_rss_mb": hub.rss_mb if rep == 0 else None,
        "error": "; ".join(errors) or None,
        "problems": [f"{what}: {p}" for what, run in runs.items() for p in run.problems],
    }


def _start_hubs(root, names, backend_url, node_modules, log, hubs, failures):
    """Append to hubs each Hub that started, to failures a sample for each that did not."""
    for name in names:
        try:
            hubs.append(start_hub(root, name, backend_url, node_modules))
        except StartupError as e:
            log(f"hub test: JupyterHub with {name} did not start: {e}")
            failures.append(
                {"test": "hub_api", "candidate": name, "rep": 0, "error": str(e), "problems": [str(e)]}
            )


def run_hub_latency(root, backend_url, node_modules, names, opts, log=print):
    """Start a Hub per proxy name, run opts.reps paired repetitions, stop the Hubs; returns samples."""
    scripts = write_scripts(root, opts)
    hubs, samples = [], []
    try:
        _start_hubs(root, names, backend_url, node_modules, log, hubs, samples)
        if opts.warmup_seconds:
            for hub in hubs:
                _probe_under_load(hub, replace(opts, seconds=opts.warmup_seconds), scripts)
        for rep in range(opts.reps):
            for hub in rotated(hubs, rep):
                sample = measure_hub(hub, rep, opts, scripts)
                samples.append(sample)
                log(
                    f"rep {rep + 1}/{opts.reps} hub_api {hub.name}: p99 idle {sample['idle_p99_ms']} ms,"
                    f" loaded {sample['loaded_p99_ms']} ms at {sample['load_rps'] or 0:.0f} req/s proxied"
                    + (f" [{'; '.join(sample['problems'])}]" if sample["problems"] else "")
                )
    finally:
        for hub in hubs:
            hub.process.stop()
    return samples


def add_hub_arguments(parser):
    """The Hub test's command-line options (shared with bench_http.py)."""
    defaults = HubOptions()
    parser.add_argument(
        "--hub-seconds", type=int, default=defaults.seconds, help="seconds per probe (default: %(default)s)"
    )
    parser.add_argument(
        "--hub-load-rate",
        type=int,
        default=defaults.load_rate,
        help="proxied req/s during the loaded probe (default: %(default)s)",
    )
    parser.add_argument(
        "--hub-probe-rate",
        type=int,
        default=defaults.probe_rate,
        help="Hub API req/s of the probe (default: %(default)s)",
    )
    parser.add_argument(
        "--hub-api-path", default=defaults.api_path, help="Hub URL timed (default: %(default)s)"
    )
    parser.add_argument("--no-hub-chp", action="store_true", help="skip the CHP-in-Hub comparison")


def hub_options(args, reps, warmup_seconds):
    return HubOptions(
        seconds=args.hub_seconds,
        reps=reps,
        warmup_seconds=warmup_seconds,
        load_rate=args.hub_load_rate,
        probe_rate=args.hub_probe_rate,
        api_path=args.hub_api_path,
    )


def hub_names(args):
    return ["inprocess"] if args.no_hub_chp else ["inprocess", "chp"]


def main():
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default: %(default)s)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of unrecorded load first (default: %(default)s)"
    )
    parser.add_argument("--node-modules", default=os.path.join(HERE, "node_modules"))
    add_hub_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inprocess-proxy-hub-") as root, ChildProcesses(root) as procs:
        nginx_url = f"http://127.0.0.1:{start_nginx(procs, root)}"
        samples = run_hub_latency(
            root,
            nginx_url,
            args.node_modules,
            hub_names(args),
            hub_options(args, args.reps, args.warmup),
        )
    print(format_table(table_rows(samples)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process the benchmark started has been stopped")
