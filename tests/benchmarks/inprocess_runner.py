"""Run InProcessProxy alone in a Python process, for the benchmark to load it.

    python tests/benchmarks/inprocess_runner.py --route /=http://127.0.0.1:8001 --route /ws/=http://127.0.0.1:8002

Without a Hub around it, this process is the proxy and its CPU and RSS are the
proxy's, the same way CHP's node process is CHP's. It prints one JSON line to
stdout once the routes are in:

    {"pid": ..., "public_url": "http://127.0.0.1:PORT/",
     "rss_before_start_kib": ..., "rss_after_start_kib": ...}

``rss_before_start`` is read after every import the proxy needs (tornado,
jupyterhub.proxy, inprocess_proxy), so the difference to ``rss_after_start``
is what starting the proxy adds, as the Hub would see it. Then it serves until
SIGTERM or SIGINT, and stops the proxy before exiting. Logs go to stderr.

The proxy runs in its default mode (its own thread, uvloop where installed);
``INPROCESS_RUNNER_TRAITS`` in the environment, a JSON object of traits such as
``{"event_loop": "asyncio"}`` or ``{"thread": false}``, measures another mode
(``bench_http.py`` passes its environment on). The ready line says which.
"""

import argparse
import asyncio
import json
import logging
import os
import signal

import tornado.ioloop  # noqa: F401  (the Hub's loop; imported so its RSS counts as "before start")

import _tests_on_path  # noqa: F401
from support.procfs import rss_kib
from inprocess_proxy import InProcessProxy


def parse_route(text):
    routespec, sep, target = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected ROUTESPEC=TARGET, got {text!r}")
    return routespec, target


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--route",
        type=parse_route,
        action="append",
        default=[],
        metavar="ROUTESPEC=TARGET",
        help="route to add (repeat)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="public port on 127.0.0.1 (default: 0, a free one)"
    )
    parser.add_argument("--log-level", default="WARNING", help="proxy log level (default: WARNING)")
    return parser.parse_args()


def wait_for_stop_signal():
    """A future that completes on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopped.done() or stopped.set_result(None))
    return stopped


async def serve(args, rss_before_start):
    stopped = wait_for_stop_signal()
    traits = json.loads(os.environ.get("INPROCESS_RUNNER_TRAITS") or "{}")
    proxy = InProcessProxy(public_url=f"http://127.0.0.1:{args.port}/", **traits)
    proxy.log.setLevel(args.log_level)
    await proxy.start()
    try:
        for routespec, target in args.route:
            await proxy.add_route(routespec, target, {})
        ready = {
            "pid": os.getpid(),
            "public_url": proxy.public_url,
            "rss_before_start_kib": rss_before_start,
            "rss_after_start_kib": rss_kib(os.getpid()),
            "mode": {"thread": proxy.thread, "event_loop": proxy.event_loop, **traits},
        }
        print(json.dumps(ready), flush=True)
        await stopped
    finally:
        await proxy.stop()


def main():
    rss_before_start = rss_kib(os.getpid())
    args = parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args, rss_before_start))


if __name__ == "__main__":
    main()
