"""WebSocket tunnels: after the target's 101, copy bytes both ways.

The proxy never parses frames: subprotocols, permessage-deflate, message
sizes, pings and close codes stay between the browser and the server, as with
configurable-http-proxy (and 2.5x cheaper than relaying messages, measured in
``docs/design.md``).

Strategy: once the 101 has been relayed, both transports get a ``_TunnelEnd``
protocol (``transport.set_protocol``) whose ``data_received`` is one write to
the other transport. Backpressure: when one side's write buffer fills, the
other side stops reading until it drains. Activity and idleness are sampled by
the server's sweeper from a flag set on every chunk, not by a clock read per
chunk.
"""

import asyncio

__all__ = ["Tunnel"]


class _TunnelEnd(asyncio.Protocol):
    """One side of a tunnel: what arrives here is written to the other side."""

    __slots__ = ("tunnel", "transport", "peer", "received")

    def __init__(self, tunnel, transport):
        self.tunnel = tunnel
        self.transport = transport
        self.peer = None
        #: bytes received since the sweeper last collected them (metrics)
        self.received = 0

    def data_received(self, data):
        self.tunnel.moved = True
        self.received += len(data)
        self.peer.transport.write(data)

    def eof_received(self):
        # WebSocket closes in-band; a half-close ends the tunnel after the
        # peer's buffered bytes are flushed
        self.peer.transport.close()
        return False

    def connection_lost(self, exc):
        self.peer.transport.close()
        self.tunnel.end_lost()

    def pause_writing(self):
        self.peer.transport.pause_reading()

    def resume_writing(self):
        self.peer.transport.resume_reading()


class Tunnel:
    """A client and a target joined after an upgrade.

    Args:
        client_transport, upstream_transport: the two connections.
        routespec: the route the tunnel was opened on; activity is recorded
            under it even if the route is later replaced or deleted.
        on_closed: called once with the tunnel when both sides are closed.
    """

    def __init__(self, client_transport, upstream_transport, routespec, on_closed):
        self.routespec = routespec
        self.on_closed = on_closed
        #: set on every chunk; the sweeper reads and clears it
        self.moved = True
        #: sweeper ticks since bytes last moved
        self.idle_ticks = 0
        self._open_ends = 2
        self.client = _TunnelEnd(self, client_transport)
        self.upstream = _TunnelEnd(self, upstream_transport)
        self.client.peer = self.upstream
        self.upstream.peer = self.client

    def start(self, to_client, to_upstream):
        """Switch both transports to the tunnel and send bytes already read."""
        client, upstream = self.client.transport, self.upstream.transport
        client.set_protocol(self.client)
        upstream.set_protocol(self.upstream)
        if to_client:
            client.write(to_client)
        if to_upstream:
            upstream.write(to_upstream)
        client.resume_reading()
        upstream.resume_reading()

    def take_byte_counts(self):
        """``(from client, from target)`` since the last call, for metrics."""
        counts = (self.client.received, self.upstream.received)
        self.client.received = self.upstream.received = 0
        return counts

    def end_lost(self):
        self._open_ends -= 1
        if self._open_ends == 0:
            self.on_closed(self)

    def close(self):
        """Close both sides, flushing what is buffered (stop, idle timeout)."""
        self.client.transport.close()
        self.upstream.transport.close()

    def abort(self):
        """Drop both sides at once (stop deadline passed)."""
        self.client.transport.abort()
        self.upstream.transport.abort()
