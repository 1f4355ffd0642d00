"""Soak: mixed traffic through InProcessProxy for minutes, sampling RSS for drift.

    python tests/benchmarks/soak.py                  # 3 minutes
    python tests/benchmarks/soak.py --duration 1800  # 30 minutes

Everything runs in this one process on one asyncio loop, as in the Hub: the
proxy, its backends (raw asyncio HTTP servers and a Tornado WebSocket echo
server) and the load. So RSS is the proxy's *plus* the load's; the load keeps
a fixed number of connections and buffers, so growth over time is the proxy's
(or a leak in the load, which would be a bug here too).

Load, all at once for the whole run:

- small GETs: ``--http-clients`` keep-alive clients making sequential requests;
- 1 MiB downloads and 1 MiB uploads: one client each, back to back;
- websockets: ``--websockets`` clients echoing a message every 50 ms, each
  reconnecting every 200 messages (so tunnels open and close all the time);
- route churn: ``/user/u<N>/`` routes added and deleted at ``--route-ops`` per
  second, with a window of 50 live ones.

Every ``--sample-every`` seconds it prints a sample (RSS, open fds, the
proxy's client connections, tunnels and upstream pool, and counts so far).
At the end it prints the drift: the last sample minus the first one after
``--warmup``, and the slope of a least-squares line through those samples.

It prints figures and does not assert; the exit status is 1 if any request
failed or any websocket dropped, 0 otherwise.
"""

import argparse
import asyncio
import gc
import logging
import os
import sys
import time

from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from websockets.asyncio.client import connect

import _tests_on_path  # noqa: F401  (the test helpers below)
from attack_helpers import DOWNLOAD_BODY, FaultBackend, RecordingBackend, address_of_proxy
from inprocess_proxy import InProcessProxy
from support.procfs import open_fds, rss_kib
from ws_backends import WsBackend, abort_open_websockets, ws_backend_app

ECHO_EVERY = 0.05
RECONNECT_EVERY = 200
ROUTE_WINDOW = 50
UPLOAD_BYTES = 1024 * 1024
UPLOAD_CHUNK = b"u" * (64 * 1024)
WAIT = 10


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180, help="seconds of load (default: 180)")
    parser.add_argument("--warmup", type=float, default=30, help="seconds before the drift baseline (default: 30)")
    parser.add_argument("--sample-every", type=float, default=5, help="seconds between RSS samples (default: 5)")
    parser.add_argument("--http-clients", type=int, default=4, help="sequential small-GET clients (default: 4)")
    parser.add_argument("--websockets", type=int, default=10, help="echoing websockets (default: 10)")
    parser.add_argument("--route-ops", type=float, default=50, help="route adds+deletes per second (default: 50)")
    return parser.parse_args()


class Counts:
    def __init__(self):
        self.small = 0
        self.downloads = 0
        self.uploads = 0
        self.echoes = 0
        self.ws_opened = 0
        self.route_ops = 0
        self.failures = []
        self.stop = asyncio.Event()

    def fail(self, what):
        if len(self.failures) < 100:
            self.failures.append(what)
        else:
            self.failures[-1] = f"... and more ({what})"


async def read_response(reader):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    remaining = length
    while remaining:
        chunk = await asyncio.wait_for(reader.read(min(remaining, 1 << 18)), WAIT)
        if not chunk:
            raise ConnectionError("closed mid-body")
        remaining -= len(chunk)
    return head, length


async def keep_alive_client(address, counts, make_request, check, name):
    """Sequential requests on one keep-alive connection, reconnecting after a failure."""
    while not counts.stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(*address)
        except OSError as e:
            counts.fail(f"{name}: connect: {e}")
            await asyncio.sleep(1)
            continue
        try:
            while not counts.stop.is_set():
                await make_request(writer)
                head, length = await read_response(reader)
                check(head, length)
        except Exception as e:  # counted; the soak goes on
            counts.fail(f"{name}: {type(e).__name__}: {e}")
            await asyncio.sleep(1)
        finally:
            writer.close()


async def small_gets(address, counts, n):
    async def request(writer):
        writer.write(b"GET /user/soak/api/status HTTP/1.1\r\nHost: soak\r\n\r\n")

    def check(head, length):
        if not head.startswith(b"HTTP/1.1 200 "):
            raise ValueError(head[:40])
        counts.small += 1

    await keep_alive_client(address, counts, request, check, f"small GET client {n}")


async def downloads(address, counts):
    async def request(writer):
        writer.write(b"GET /download/big HTTP/1.1\r\nHost: soak\r\n\r\n")

    def check(head, length):
        if not head.startswith(b"HTTP/1.1 200 ") or length != len(DOWNLOAD_BODY):
            raise ValueError(head[:40])
        counts.downloads += 1

    await keep_alive_client(address, counts, request, check, "download client")


async def uploads(address, counts):
    async def request(writer):
        writer.write(b"POST /upload/big HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % UPLOAD_BYTES)
        for _ in range(UPLOAD_BYTES // len(UPLOAD_CHUNK)):
            writer.write(UPLOAD_CHUNK)
            await writer.drain()

    def check(head, length):
        if not head.startswith(b"HTTP/1.1 200 "):
            raise ValueError(head[:40])
        counts.uploads += 1

    await keep_alive_client(address, counts, request, check, "upload client")


async def websocket_client(url, counts, n):
    while not counts.stop.is_set():
        try:
            async with connect(url, proxy=None, ping_interval=None, compression=None, open_timeout=WAIT) as ws:
                counts.ws_opened += 1
                for i in range(RECONNECT_EVERY):
                    if counts.stop.is_set():
                        return
                    message = f"ws {n} message {i}"
                    await ws.send(message)
                    reply = await asyncio.wait_for(ws.recv(), WAIT)
                    if reply != message:
                        raise ValueError(f"sent {message!r}, got {reply!r}")
                    counts.echoes += 1
                    # the load is periodic: one echo every ECHO_EVERY seconds
                    await asyncio.sleep(ECHO_EVERY)
        except Exception as e:  # counted; the soak goes on
            counts.fail(f"websocket {n}: {type(e).__name__}: {e}")
            await asyncio.sleep(1)


async def route_churn(proxy, target, counts, ops_per_second):
    k = 0
    live = []
    while not counts.stop.is_set():
        routespec = f"/user/u{k}/"
        await proxy.add_route(routespec, f"{target}/churn/{k}", {"user": f"u{k}"})
        live.append(routespec)
        counts.route_ops += 1
        if len(live) > ROUTE_WINDOW:
            await proxy.delete_route(live.pop(0))
            counts.route_ops += 1
        k += 1
        # the churn is a rate: ops_per_second on average
        await asyncio.sleep(2 / ops_per_second)
    for routespec in live:
        await proxy.delete_route(routespec)


def slope_kib_per_minute(samples):
    """Least-squares slope of RSS over time, in KiB per minute."""
    n = len(samples)
    if n < 2:
        return float("nan")
    xs = [s["t"] for s in samples]
    ys = [s["rss_kib"] for s in samples]
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else float("nan")


async def soak(args):
    log = logging.getLogger("soak.proxy")
    http_backend = await RecordingBackend("soak", record=False).start()
    files_backend = await FaultBackend().start()
    ws_backend = WsBackend()
    ws_server = HTTPServer(ws_backend_app(ws_backend))
    ws_socket, ws_port = bind_unused_port()
    ws_server.add_socket(ws_socket)
    proxy = InProcessProxy(public_url="http://127.0.0.1:0/", log=log, new_route_retry_period=0)
    await proxy.start()
    await proxy.add_route("/", http_backend.url, {"hub": True})
    await proxy.add_route("/download/", files_backend.url, {})
    await proxy.add_route("/upload/", files_backend.url, {})
    await proxy.add_route("/user/ws/", f"http://127.0.0.1:{ws_port}", {"user": "ws"})
    address = address_of_proxy(proxy)
    counts = Counts()
    tasks = [asyncio.ensure_future(small_gets(address, counts, n)) for n in range(args.http_clients)]
    tasks.append(asyncio.ensure_future(downloads(address, counts)))
    tasks.append(asyncio.ensure_future(uploads(address, counts)))
    ws_base = f"ws://{address[0]}:{address[1]}/user/ws/api/kernels"
    tasks += [asyncio.ensure_future(websocket_client(f"{ws_base}/{n}/channels", counts, n)) for n in range(args.websockets)]
    tasks.append(asyncio.ensure_future(route_churn(proxy, http_backend.url, counts, args.route_ops)))

    print(
        f"soak: {args.duration:g} s, warm-up {args.warmup:g} s, sample every {args.sample_every:g} s;"
        f" {args.http_clients} small-GET clients, 1 download and 1 upload client (1 MiB each),"
        f" {args.websockets} websockets, {args.route_ops:g} route ops/s; pid {os.getpid()}",
        flush=True,
    )
    header = (
        f"{'t (s)':>6} {'rss KiB':>9} {'fds':>5} {'clients':>7} {'tunnels':>7} {'pool':>5}"
        f" {'small GETs':>10} {'downloads':>9} {'uploads':>7} {'echoes':>7} {'ws opened':>9} {'route ops':>9} {'fail':>4}"
    )
    print(header, flush=True)
    samples = []
    started = time.monotonic()
    try:
        while True:
            # sampling is a rate: one sample every --sample-every seconds
            await asyncio.sleep(args.sample_every)
            t = time.monotonic() - started
            # the websocket backend keeps a record per handshake and close for
            # the tests; drop them so the load itself does not grow
            ws_backend.handshakes.clear()
            ws_backend.closes.clear()
            gc.collect()
            server = proxy.server
            sample = {
                "t": t,
                "rss_kib": rss_kib(),
                "fds": open_fds(),
                "clients": len(server.clients),
                "tunnels": len(server.tunnels),
                "pool": len(server.pool),
            }
            samples.append(sample)
            print(
                f"{t:>6.0f} {sample['rss_kib']:>9} {sample['fds']:>5} {sample['clients']:>7} {sample['tunnels']:>7}"
                f" {sample['pool']:>5} {counts.small:>10} {counts.downloads:>9} {counts.uploads:>7} {counts.echoes:>7}"
                f" {counts.ws_opened:>9} {counts.route_ops:>9} {len(counts.failures):>4}",
                flush=True,
            )
            if t >= args.duration:
                break
    finally:
        counts.stop.set()
        await asyncio.wait(tasks, timeout=2 * WAIT)
        for task in tasks:
            task.cancel()
        await proxy.stop()
        ws_server.stop()
        abort_open_websockets(ws_backend)
        await http_backend.close()
        await files_backend.close()

    after_warmup = [s for s in samples if s["t"] >= args.warmup]
    elapsed = samples[-1]["t"] if samples else 0
    print()
    if len(after_warmup) >= 2:
        first, last = after_warmup[0], after_warmup[-1]
        rss = [s["rss_kib"] for s in after_warmup]
        print(
            f"RSS drift after warm-up: {last['rss_kib'] - first['rss_kib']:+d} KiB"
            f" ({first['rss_kib']} KiB at {first['t']:.0f} s -> {last['rss_kib']} KiB at {last['t']:.0f} s);"
            f" min {min(rss)}, max {max(rss)} KiB; least-squares slope {slope_kib_per_minute(after_warmup):+.1f} KiB/min"
        )
        print(f"fds after warm-up: {first['fds']} -> {last['fds']}")
    else:
        print("too few samples after the warm-up for a drift figure")
    print(
        f"totals in {elapsed:.0f} s: {counts.small} small GETs ({counts.small / max(elapsed, 1):.0f}/s),"
        f" {counts.downloads} downloads and {counts.uploads} uploads of 1 MiB,"
        f" {counts.echoes} websocket echoes on {counts.ws_opened} websocket connections,"
        f" {counts.route_ops} route ops; {len(counts.failures)} failures"
    )
    for failure in counts.failures[:20]:
        print(f"  failure: {failure}")
    return 1 if counts.failures else 0


def main():
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
