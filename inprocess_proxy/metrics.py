"""Prometheus metrics of the proxy, in the process's registry (``/hub/metrics`` in a Hub).

Deviation from ``prometheus_client`` objects bumped per request: a labelled
``Counter.inc()`` plus a ``Histogram.observe()`` take a lock each and cost a
few microseconds, a noticeable share of a proxied request's CPU here (see
``docs/design.md``). Instead the data path adds to plain integers in a
``ProxyStats`` (one per data plane) and ``ProxyCollector`` turns them into
metric families when the registry is scraped, from a snapshot each data plane
takes on its own thread (``plane.DataPlane.metrics_snapshot``).

Names follow JupyterHub's style (``jupyterhub_proxy_...``, the
``JUPYTERHUB_METRICS_PREFIX`` namespace); label values come from small fixed
sets, never a user name or a path.

``prometheus_client`` is imported when metrics are registered, not with this
module: the data path imports ``ProxyStats`` from here, and the standalone
process without ``--metrics-port`` would otherwise carry the library's
imports (``http.server``, ``wsgiref``, ``platform``: about 4 MB of RSS).
"""

import bisect
import copy
import weakref

__all__ = ["KINDS", "ProxyStats", "ProxyCollector", "register"]

#: request kinds, index = position
KINDS = ("http", "websocket")
#: status classes, index = status // 100 - 1
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
#: causes of upstream failures (errors.UpstreamError.cause values)
CAUSES = ("connect", "closed", "timeout", "protocol", "error")

#: request duration buckets in seconds: proxied requests take a fraction of
#: a millisecond, a Hub page tens of milliseconds, a spawn seconds
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: route-table operation buckets in seconds (microseconds in practice)
ROUTE_OP_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3, 1e-2)
ROUTE_OPS = ("add", "delete", "get_all")


class _Histogram:
    """Bucket counts and a sum, bumped with plain arithmetic."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self):
        """``[(le, cumulative count)]`` as Prometheus wants, ending with +Inf."""
        running = 0
        buckets = []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += count
            buckets.append((bound, running))
        return buckets


class ProxyStats:
    """What one running proxy counted; the data path writes these fields directly."""

    def __init__(self):
        #: requests[kind][status // 100 - 1]
        self.requests = [[0] * len(STATUS_CLASSES) for _ in KINDS]
        self.durations = [_Histogram(DURATION_BUCKETS) for _ in KINDS]
        self.upstream_errors = dict.fromkeys(CAUSES, 0)
        #: body bytes from clients to targets, and from targets to clients
        self.bytes_in = 0
        self.bytes_out = 0
        #: requests whose client left before their response ended
        self.client_aborts = 0
        self.route_ops = {op: _Histogram(ROUTE_OP_BUCKETS) for op in ROUTE_OPS}

    def copy(self):
        """An independent copy, for a consistent export while counting goes on."""
        return copy.deepcopy(self)

    def request_done(self, kind, status, seconds):
        """Count one answered request (kind: index into KINDS)."""
        self.requests[kind][min(max(status // 100, 1), 5) - 1] += 1
        self.durations[kind].observe(seconds)


class ProxyCollector:
    """Exports the stats of every data plane in this process (a ``prometheus_client`` collector).

    One collector is registered once per process; data planes come and go
    (tests start many), each held weakly.
    """

    def __init__(self, prefix):
        self.prefix = prefix
        #: DataPlane objects, each with ``metrics_snapshot()``
        self.sources = weakref.WeakSet()

    def _name(self, name):
        return f"{self.prefix}_proxy_{name}"

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        snapshots = [plane.metrics_snapshot() for plane in list(self.sources)]
        counted = [snapshot.stats for snapshot in snapshots]
        requests = CounterMetricFamily(
            self._name("requests"), "Requests answered by the proxy, by kind and status class", labels=["kind", "status_class"]
        )
        durations = HistogramMetricFamily(
            self._name("request_duration_seconds"),
            "Time from a request's head to the end of its response (to the 101 for websockets)",
            labels=["kind"],
        )
        errors = CounterMetricFamily(
            self._name("upstream_errors"), "Failures talking to route targets, by cause", labels=["cause"]
        )
        transferred = CounterMetricFamily(
            self._name("body_bytes"), "Body bytes proxied (websocket tunnel bytes included)", labels=["direction"]
        )
        aborts = CounterMetricFamily(
            self._name("client_aborts"),
            "Requests whose client left before the response ended; their target connection was closed",
        )
        route_ops = HistogramMetricFamily(
            self._name("route_operation_duration_seconds"), "Time spent in route-table operations", labels=["operation"]
        )
        clients = GaugeMetricFamily(self._name("client_connections"), "Open client connections (tunnels excluded)")
        tunnels = GaugeMetricFamily(self._name("websocket_tunnels"), "Open websocket tunnels")
        pooled = GaugeMetricFamily(self._name("upstream_connections"), "Open connections to targets", labels=["state"])
        routes = GaugeMetricFamily(self._name("routes"), "Routes in the table")

        for kind_index, kind in enumerate(KINDS):
            for class_index, status_class in enumerate(STATUS_CLASSES):
                total = sum(stats.requests[kind_index][class_index] for stats in counted)
                requests.add_metric([kind, status_class], total)
            merged = _merge([stats.durations[kind_index] for stats in counted], DURATION_BUCKETS)
            durations.add_metric([kind], merged.cumulative(), merged.total)
        for cause in CAUSES:
            errors.add_metric([cause], sum(stats.upstream_errors[cause] for stats in counted))
        transferred.add_metric(["in"], sum(stats.bytes_in for stats in counted))
        transferred.add_metric(["out"], sum(stats.bytes_out for stats in counted))
        aborts.add_metric([], sum(stats.client_aborts for stats in counted))
        for op in ROUTE_OPS:
            merged = _merge([stats.route_ops[op] for stats in counted], ROUTE_OP_BUCKETS)
            route_ops.add_metric([op], merged.cumulative(), merged.total)

        clients.add_metric([], sum(snapshot.clients for snapshot in snapshots))
        tunnels.add_metric([], sum(snapshot.tunnels for snapshot in snapshots))
        pooled.add_metric(["idle"], sum(snapshot.idle_upstreams for snapshot in snapshots))
        pooled.add_metric(["busy"], sum(snapshot.busy_upstreams for snapshot in snapshots))
        routes.add_metric([], sum(snapshot.routes for snapshot in snapshots))
        yield from (requests, durations, errors, transferred, aborts, route_ops, clients, tunnels, pooled, routes)


def _merge(histograms, bounds):
    merged = _Histogram(bounds)
    for histogram in histograms:
        merged.counts = [a + b for a, b in zip(merged.counts, histogram.counts)]
        merged.total += histogram.total
        merged.count += histogram.count
    return merged


_collector = None


def register(plane, prefix, registry=None):
    """Export ``plane``'s metrics in ``registry`` (default: ``prometheus_client``'s,
    which the Hub serves at ``/hub/metrics``).

    ``prefix`` is the Hub's ``metrics_prefix`` (``jupyterhub``); the first
    data plane registered in a process sets it.
    """
    global _collector
    if registry is None:
        from prometheus_client.registry import REGISTRY as registry
    if _collector is None:
        _collector = ProxyCollector(prefix)
        registry.register(_collector)
    _collector.sources.add(plane)
