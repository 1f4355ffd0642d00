"""Error pages: the Hub's own, fetched as configurable-http-proxy's ``--error-target`` does.

For a 404 or 5xx the proxy generates, it GETs ``{hub.url}error/{code}?url=
{quoted request target}`` through the upstream pool (so unix sockets and
internal_ssl work as for any route) with a short timeout, and answers with the
Hub's body under its own status code. The Hub escapes what it renders; the
plain-text fallback names only the status, never the request.

Instead of an error target, a front-end may give pages read from files
(configurable-http-proxy's ``--error-path``): one HTML body per status, and
one for every other status.
"""

import asyncio
from urllib.parse import quote

from .errors import UpstreamError
from .http1 import reason_phrase
from .targets import parse_target

__all__ = ["ErrorPages"]

#: an error page larger than this is not the Hub's; use the fallback
MAX_ERROR_PAGE_SIZE = 1 << 20


class _PageFetch:
    """A sink collecting one response from the Hub (see ``upstream``)."""

    def __init__(self, future):
        self.future = future
        self.content_type = None
        self.body = []
        self.size = 0

    def response_interim(self, status, reason, headers):
        pass

    def response_head(self, status, reason, headers):
        for name, value in headers:
            if name.lower() == b"content-type":
                self.content_type = value

    def response_body(self, chunk):
        self.size += len(chunk)
        if self.size <= MAX_ERROR_PAGE_SIZE:
            self.body.append(chunk)

    def response_end(self):
        if not self.future.done():
            if self.size > MAX_ERROR_PAGE_SIZE:
                self.future.set_exception(UpstreamError("error page too large"))
            else:
                self.future.set_result((self.content_type, b"".join(self.body)))

    def upstream_failed(self, conn, error):
        if not self.future.done():
            self.future.set_exception(error)

    def upstream_upgraded(self, conn, rest):
        conn.abort()
        self.upstream_failed(conn, UpstreamError("unexpected upgrade"))

    def upstream_write_paused(self):
        pass

    def upstream_write_resumed(self):
        pass

    def flush(self):
        pass


def fallback_page(status):
    """The plain-text body used when the Hub's page cannot be had."""
    return b"text/plain; charset=utf-8", b"%d %s\n" % (status, reason_phrase(status))


class ErrorPages:
    """Render error bodies, preferring the Hub's pages.

    Args:
        pool: the UpstreamPool to reach the Hub with.
        error_target: ``{hub.url}error/`` or None without a Hub.
        timeout: seconds to wait for the Hub's page.
        files: instead of an error target, HTML bodies (bytes) by status, the
            key None for any other status; or None.
    """

    def __init__(self, pool, error_target, timeout, log, files=None):
        self.pool = pool
        self.timeout = timeout
        self.log = log
        self.endpoint = parse_target(error_target) if error_target else None
        self.path = self.endpoint.prefix + b"/" if error_target else b""
        self.files = files

    async def render(self, status, request_target):
        """Return ``(content_type, body)`` for an error response; never raises."""
        if self.files is not None:
            body = self.files.get(status, self.files.get(None))
            if body is not None:
                return b"text/html; charset=utf-8", body
        if self.endpoint is None:
            return fallback_page(status)
        try:
            return await asyncio.wait_for(self._fetch(status, request_target), self.timeout)
        except (UpstreamError, asyncio.TimeoutError) as e:
            self.log.debug("Hub error page for %d unavailable: %s", status, e or "timeout")
            return fallback_page(status)

    async def _fetch(self, status, request_target):
        url = quote(request_target.decode("utf-8", "surrogateescape"), safe="", errors="surrogateescape")
        head = b"GET %s%d?url=%s HTTP/1.1\r\nHost: %s\r\nAccept: text/html\r\n\r\n" % (
            self.path,
            status,
            url.encode("ascii"),
            self.endpoint.host_header,
        )
        conn = self.pool.take_idle(self.endpoint) or await self.pool.connect(self.endpoint)
        future = asyncio.get_running_loop().create_future()
        conn.start(_PageFetch(future), head_request=False)
        conn.write(head)
        conn.end_request()
        try:
            content_type, body = await future
        except asyncio.CancelledError:
            conn.abort()
            raise
        return content_type or b"text/html; charset=utf-8", body
