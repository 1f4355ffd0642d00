"""A real Tornado WebSocket backend for the tunnel tests, and what it observed.

Nothing here imports ``inprocess_proxy``. Each handler records its handshake
(path and headers, in ``open()``) and how the connection closed (in
``on_close()``) on a shared ``WsBackend``, so tests can check what reached
the far side of the proxy and await its events instead of sleeping.

Paths match at any prefix:

- ``.../forbidden-origin``: ``check_origin`` refuses, Tornado answers 403.
- ``.../forbidden``: ``get()`` raises 403 before the upgrade.
- ``.../server-close``: the first message makes the backend close with
  ``SERVER_CLOSE_CODE`` and ``SERVER_CLOSE_REASON``.
- ``.../greet``: sends ``GREETING`` from ``open()``, right behind the 101.
- ``.../one-way``: never answers; records what it receives (``received``)
  and sends ``PUSHED`` on its own once a test sets ``push``.
- anything else: echoes each message, text as text, binary as binary.

Every handler picks the subprotocol ``"b"`` when the client offers it, and
offers permessage-deflate when the app's ``ws_compression`` setting is a dict.
"""

import asyncio
from dataclasses import dataclass

from tornado import httputil, web, websocket

#: largest message the backend accepts; above the 50 MiB test message
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
#: the subprotocol the backend chooses when offered
CHOSEN_SUBPROTOCOL = "b"
SERVER_CLOSE_CODE = 4001
SERVER_CLOSE_REASON = "server bye"
GREETING = "hello from open()"
PUSHED = "pushed by the backend"


@dataclass
class Handshake:
    """An upgrade request the backend accepted."""

    path: str
    headers: httputil.HTTPHeaders  # a copy of what the backend received


@dataclass
class Close:
    """How a websocket ended, as the backend saw it (None, None: no close frame)."""

    code: int
    reason: str


class WsBackend:
    """What one backend observed; handlers write it, tests read and await it."""

    def __init__(self):
        #: accepted upgrades, in order
        self.handshakes = []
        #: ends of accepted websockets, in order
        self.closes = []
        #: set each time a websocket to this backend ends (wait_closes clears it)
        self.closed = asyncio.Event()
        #: messages the one-way handler received
        self.received = []
        #: set each time the one-way handler receives a message
        self.message_received = asyncio.Event()
        #: the one-way handler sends PUSHED once this is set
        self.push = asyncio.Event()
        #: handlers whose websocket is open
        self.open_handlers = set()
        #: ``http://127.0.0.1:<port>``, ``https://...`` or ``http+unix://<quoted path>``
        self.url = None
        self.server = None

    async def wait_closes(self, count):
        """Return once ``count`` websockets to this backend have ended."""
        while len(self.closes) < count:
            self.closed.clear()
            await self.closed.wait()


class RecordingHandler(websocket.WebSocketHandler):
    """Records handshake and close on the backend; the base of every handler here."""

    @property
    def backend(self):
        return self.settings["backend"]

    def get_compression_options(self):
        return self.settings.get("ws_compression")

    def select_subprotocol(self, subprotocols):
        return CHOSEN_SUBPROTOCOL if CHOSEN_SUBPROTOCOL in subprotocols else None

    def open(self):
        headers = httputil.HTTPHeaders(self.request.headers)
        self.backend.handshakes.append(Handshake(self.request.path, headers))
        self.backend.open_handlers.add(self)

    def on_close(self):
        self.backend.open_handlers.discard(self)
        self.backend.closes.append(Close(self.close_code, self.close_reason))
        self.backend.closed.set()


class EchoHandler(RecordingHandler):
    def on_message(self, message):
        self.write_message(message, binary=isinstance(message, bytes))


class ForbiddenOriginHandler(EchoHandler):
    def check_origin(self, origin):
        return False


class ForbiddenHandler(EchoHandler):
    async def get(self, *args, **kwargs):
        raise web.HTTPError(403)


class ServerCloseHandler(RecordingHandler):
    def on_message(self, message):
        self.close(SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)


class GreetingHandler(EchoHandler):
    def open(self):
        super().open()
        self.write_message(GREETING)


class OneWayHandler(RecordingHandler):
    """Traffic in one direction at a time: receives silently, pushes on a trigger."""

    def open(self):
        super().open()
        self._pusher = asyncio.ensure_future(self._push_when_told())

    async def _push_when_told(self):
        await self.backend.push.wait()
        try:
            await self.write_message(PUSHED)
        except websocket.WebSocketClosedError:
            pass  # the client left before the trigger; nothing to push to

    def on_message(self, message):
        self.backend.received.append(message)
        self.backend.message_received.set()

    def on_close(self):
        self._pusher.cancel()
        super().on_close()


def ws_backend_app(backend, *, compression=None):
    """The Tornado application of a WebSocket backend.

    Args:
        backend: the WsBackend its handlers record into.
        compression: ``get_compression_options()`` result; ``{}`` offers
            permessage-deflate with Tornado's defaults, None offers none.
    """
    return web.Application(
        [
            (r".*/forbidden-origin", ForbiddenOriginHandler),
            (r".*/forbidden", ForbiddenHandler),
            (r".*/server-close", ServerCloseHandler),
            (r".*/greet", GreetingHandler),
            (r".*/one-way", OneWayHandler),
            (r".*", EchoHandler),
        ],
        backend=backend,
        ws_compression=compression,
        websocket_max_message_size=MAX_MESSAGE_SIZE,
    )


def abort_open_websockets(backend):
    """Drop the backend's websockets that are still open (teardown after a failed test).

    The proxy's stop() normally ends them; this only makes sure no socket
    outlives the test's event loop.
    """
    for handler in list(backend.open_handlers):
        if handler.ws_connection is not None:
            handler.ws_connection.stream.close()
