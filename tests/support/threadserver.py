"""An ``http.server`` server on 127.0.0.1 in a thread, for tests whose clients block.

``serving(handler)`` runs a ``ThreadingHTTPServer`` (daemon request threads)
on a port the OS picks, yields its base URL, and shuts it down and joins its
thread at the end of the ``with`` block.
"""

import contextlib
import threading
from http.server import ThreadingHTTPServer

__all__ = ["serving"]

#: seconds the serving thread gets to end after shutdown()
JOIN_TIMEOUT = 10


@contextlib.contextmanager
def serving(handler, server_class=ThreadingHTTPServer):
    """``with serving(Handler) as url``: ``url`` is ``http://127.0.0.1:<port>``."""
    server = server_class(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"{handler.__name__}-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(JOIN_TIMEOUT)
