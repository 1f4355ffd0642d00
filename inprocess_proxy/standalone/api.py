"""configurable-http-proxy's REST API (``doc/rest-api.yml``) over a ``RouteStore``.

Requests and answers are CHP's: ``GET /api/routes[?inactive_since=ISO]``,
``GET/POST/DELETE /api/routes/<path>``, ``Authorization: token <token>``,
201 on add, 204 (or 404) on delete, route data echoed back with the
``target`` and a ``last_activity`` in milliseconds (``2026-11-23T08:49:40.177Z``).

Route keys: CHP keys routes by the percent-*decoded* path without its trailing
slash (``/user/a b``; with host routing ``/host.example.com/user/a``), and
JupyterHub's ``ConfigurableHTTPProxy`` converts to and from its routespecs
(``/user/a%20b/``, ``host.example.com/user/a/``). The route store holds
routespecs, so this module converts at the boundary the way JupyterHub's
client converts back (``quote(key, safe="@/~")`` plus the slash): the store
then holds exactly the routespecs the Hub asked for.

Where CHP answers badly, this answers 4xx with a JSON message and changes
nothing: invalid JSON, a body that is not an object, a missing or malformed
target (CHP stores any string and then fails every request on it), a route
path with invalid escapes or a dot segment, ``DELETE /api/routes`` without a
path (CHP never answers), an oversized body. A change a shared store
(``--route-store``) cannot take answers 503 with the store's message and
changes nothing.
"""

import hmac
import json
import re
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, unquote

from ..activity import isoformat
from ..store import RouteStoreUnavailable
from .control import Response, error_response, json_response

__all__ = ["RoutesAPI", "key_to_routespec", "routespec_to_key"]

#: the API's one resource: /api/routes and what is below it (CHP's regex)
_ROUTES = re.compile(r"^/api/routes(/.*)?$")
#: CHP's token header, anchored and case-insensitive about the scheme
_TOKEN = re.compile(r"^\s*token\s+(\S+)\s*$", re.IGNORECASE)
#: a % not followed by two hex digits
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: bytes a route path may not hold once decoded
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: largest POST body, bytes: a route's data is a few hundred bytes
MAX_BODY = 65536
ALLOW = ((b"Allow", b"GET, POST, DELETE"),)


def key_to_routespec(key, host_routing):
    """A CHP route key (decoded, ``/a/b``) -> the routespec the store holds (``/a/b/``)."""
    if key == "/":
        return "/"
    routespec = quote(key, safe="@/~") + "/"
    return routespec[1:] if host_routing else routespec


def routespec_to_key(routespec, host_routing):
    """A routespec -> the CHP route key ``GET /api/routes`` lists it under."""
    if routespec == "/":
        return "/"
    key = unquote(routespec[:-1] if routespec.endswith("/") else routespec)
    return "/" + key if host_routing else key


def chp_timestamp(text):
    """JupyterHub's ISO-8601 text (microseconds or none) -> CHP's (milliseconds)."""
    if len(text) == 20:  # 2026-11-23T08:49:40Z
        return text[:19] + ".000Z"
    return text[:23] + "Z"


class BadRequest(Exception):
    """A request this API refuses with 400; nothing was changed."""


class RoutesAPI:
    """The REST API's ControlHandler.

    Args:
        store: the RouteStore routes are changed and listed through.
        host_routing: route keys start with a host.
        auth_token: the token requests must present, or "" for none.
        log: the process's logger.
    """

    max_body = MAX_BODY

    def __init__(self, store, *, host_routing, auth_token, log):
        self.store = store
        self.host_routing = host_routing
        self.auth_token = auth_token.encode()
        self.log = log

    # --- ControlHandler -------------------------------------------------------

    def head_received(self, request):
        if not _ROUTES.match(request.path):
            return error_response(404, f"Not Found: {request.path}")
        if request.method not in ("GET", "POST", "DELETE"):
            # CHP answers this before checking the token
            response = error_response(405, f"Method not supported: {request.method}")
            return response._replace(headers=ALLOW)
        if not self._authorized(request.headers.get("authorization", "")):
            self.log.warning("403 %s %s: missing or wrong token", request.method, request.path)
            return error_response(403, "Authorization: token <CONFIGPROXY_AUTH_TOKEN> required")
        return None

    async def handle(self, request):
        try:
            key = self._route_key(request.path)
            if request.method == "GET":
                return await self._get(key, request.query)
            if request.method == "POST":
                return await self._post(key, request.body)
            return await self._delete(key)
        except BadRequest as e:
            self.log.warning("400 %s %s: %s", request.method, request.path, e)
            return error_response(400, str(e))
        except RouteStoreUnavailable as e:
            # a shared store (--route-store) could not take the change: nothing changed
            self.log.warning("503 %s %s: %s", request.method, request.path, e)
            return error_response(503, str(e))

    # --- requests ------------------------------------------------------------

    def _authorized(self, header):
        if not self.auth_token:
            return True
        match = _TOKEN.match(header)
        return match is not None and hmac.compare_digest(match.group(1).encode(), self.auth_token)

    def _route_key(self, path):
        """The decoded route key of ``/api/routes/<path>``, or None for the collection itself."""
        raw = _ROUTES.match(path).group(1)
        if raw is None:
            return None
        if _BAD_ESCAPE.search(raw):
            raise BadRequest(f"Invalid route path {raw!r}: a % must start an escape")
        try:
            decoded = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(f"Invalid route path {raw!r}: escapes are not UTF-8") from None
        if _CONTROL.search(decoded):
            raise BadRequest(f"Invalid route path {raw!r}: control characters")
        # CHP's cleanPath: one trailing slash goes
        if len(decoded) > 1 and decoded.endswith("/"):
            decoded = decoded[:-1]
        return decoded

    def _routespec(self, key):
        return key_to_routespec(key, self.host_routing)

    def _listed(self, route):
        """A store route -> CHP's form: its data, target and last_activity in one object."""
        listed = dict(route["data"])
        listed["target"] = route["target"]
        last_activity = listed.get("last_activity")
        if last_activity is not None:
            listed["last_activity"] = chp_timestamp(last_activity)
        return listed

    async def _get(self, key, query):
        if key is not None and key != "/":
            route = await self.store.get_route(self._routespec(key))
            if route is None:
                return error_response(404, f"No route {key}")
            return json_response(200, self._listed(route))
        since = self._inactive_since(query)
        routes = await self.store.get_all_routes(since)
        listed = {
            routespec_to_key(routespec, self.host_routing): self._listed(route) for routespec, route in routes.items()
        }
        if since is not None:
            # the store filters by traffic; a route without any counts as
            # active when it was added (its last_activity), as in CHP
            listed = {
                key: route
                for key, route in listed.items()
                if "last_activity" not in route or _timestamp(route["last_activity"]) < since
            }
        return json_response(200, listed)

    def _inactive_since(self, query):
        params = parse_qs(query)
        values = params.get("inactiveSince") or params.get("inactive_since")
        if not values:
            return None
        try:
            return _timestamp(values[0])
        except ValueError:
            raise BadRequest(f"Invalid datestamp '{values[0]}' must be ISO8601.") from None

    async def _post(self, key, body):
        key = key or "/"
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"Body not valid JSON: {e}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BadRequest("Body must be a JSON object")
        target = data.pop("target", None)
        if not isinstance(target, str):
            raise BadRequest("Must specify 'target' as string")
        try:
            await self.add_route(key, target, data)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return Response(201)

    async def add_route(self, key, target, data):
        """Add or replace the route of CHP key ``key`` as CHP does (``--default-target`` too).

        Raises:
            ValueError: naming the route, for a malformed key or target; nothing changed.
        """
        if self.host_routing and key != "/":
            data["host"] = key.split("/")[1]
        # CHP counts a route as active when it is added
        data["last_activity"] = isoformat(time.time())
        await self.store.add_route(self._routespec(key), target, data)
        self.log.info("Route added %s -> %s", key, target)

    async def _delete(self, key):
        if key is None:
            raise BadRequest("DELETE needs a route path: /api/routes/<path>")
        routespec = self._routespec(key)
        try:
            route = await self.store.get_route(routespec)
            if route is None:
                return error_response(404, f"No route {key}")
            await self.store.delete_route(routespec)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        self.log.info("Route deleted %s", key)
        return Response(204)


def _timestamp(text):
    """ISO-8601 text -> ``time.time()`` seconds; a time without zone is UTC.

    Raises:
        ValueError: if it is not ISO-8601.
    """
    text = text.strip()
    if text.endswith(("Z", "z")):
        # what JavaScript's toISOString() writes; fromisoformat takes it from Python 3.11 on
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
