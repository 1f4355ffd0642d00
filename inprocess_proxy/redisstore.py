"""The Redis route store: several proxy replicas serving one route table.

Strategy:

- Redis holds the table; each replica holds all of it in its ``DataPlane``'s
  ``RouteTable`` and routes from there, so no request waits on Redis.
- A change is one Lua script: the route hash, the table's version (one
  ``INCR``) and a message on the change channel, atomically. The script
  refuses (returns -1) unless the table's *epoch* is the one this replica
  loaded, so a replica never writes one route into a table that Redis lost
  and someone else re-created.
- One follower task per replica subscribes to the channel *first*, then
  reads a snapshot (epoch, version, routes in one MULTI/EXEC) and replaces
  its local table with it, then applies messages strictly in version order.
  A message from another epoch, or one that skips a version, makes it load
  the whole table again; so does a lost subscription (the follower's client
  never reconnects silently). Local changes are applied by the follower too,
  from their own message: one consumer, in version order, and a write
  returns when the follower has applied its version.
- A tick every ``activity_interval`` seconds merges this replica's activity
  into a sorted set (``ZADD GT``: the newest time wins) and checks that the
  version Redis had at the previous tick has been reached here, which catches
  a message lost without a disconnect. Listing routes first takes the merged
  times from Redis into the local table, so every replica lists the newest
  activity any replica saw.
- A Redis that comes back empty (restarted without persistence, flushed)
  has no epoch. A replica that served a table before seeds the new epoch
  with its own table, so the replicas keep their routes instead of all
  dropping them; a new replica creates an empty table.

Keys, for the prefix ``P`` (``inprocess-proxy`` by default):

- ``P:routes``: hash, routespec -> JSON ``{"target": ..., "data": ...}``
- ``P:version``: integer, incremented by every change
- ``P:epoch``: random id of this table's life in Redis
- ``P:activity``: sorted set, routespec scored by its last activity (``time.time()``)
- channel ``P:changes``: JSON ``[epoch, version, op, routespec, value]``,
  op ``add`` or ``delete`` (or ``reload`` when a table is created)

Threads: the store runs on the event loop of the front-end that created it
(the Hub's, or the standalone process's main loop). It changes the local table
only through ``DataPlane``'s route calls, which hand each to the data plane's
owner thread.

Requires Redis 6.2 or newer (``ZADD GT``) and redis-py 5.0.1 or newer.
"""

import asyncio
import json
import os
import re
import secrets
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .routes import routespec_key
from .store import RouteStoreUnavailable

__all__ = ["RedisRouteStore", "mask_url", "PASSWORD_ENV"]

#: environment variable with the Redis password, used when the URL has none
#: (so it never has to appear on a command line)
PASSWORD_ENV = "INPROCESS_PROXY_REDIS_PASSWORD"
DEFAULT_PREFIX = "inprocess-proxy"

#: seconds the follower waits for a message before it looks at its reload
#: flag again (the tick and writers set it)
FOLLOW_POLL = 0.25
#: seconds between the follower's PINGs on an idle subscription (redis-py's
#: health check), so a dead connection is noticed while no change comes
FOLLOW_HEALTH_CHECK = 5
#: the follower's reconnect delays: from the first, doubling to the last
RECONNECT_DELAY_FIRST = 0.05
RECONNECT_DELAY_MAX = 2.0

# KEYS: routes, version, epoch, activity; ARGV: epoch, op, routespec, value, channel.
# Returns the new version, 0 for deleting an absent route, -1 for another epoch.
_WRITE = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
if ARGV[2] == 'add' then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
elseif redis.call('HDEL', KEYS[1], ARGV[3]) == 1 then
  redis.call('ZREM', KEYS[4], ARGV[3])
else
  return 0
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[5], cjson.encode({ARGV[1], version, ARGV[2], ARGV[3], ARGV[4]}))
return version
"""

# KEYS: routes, version, epoch, activity; ARGV: new epoch, channel, then
# routespec, value pairs to seed the table with. Creates the table unless an
# epoch exists; returns the epoch in force.
_CREATE = """
local current = redis.call('GET', KEYS[3])
if current then return current end
redis.call('DEL', KEYS[1], KEYS[4])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[3], ARGV[1])
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[2], cjson.encode({ARGV[1], version, 'reload', '', ''}))
return ARGV[1]
"""

# KEYS: routes, activity; ARGV: routespec, time pairs. Newest time wins; a
# deleted route's activity is not brought back.
_MERGE_ACTIVITY = """
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], 'GT', ARGV[i + 1], ARGV[i])
  end
end
return 0
"""

#: what a lost or refused Redis connection raises
_UNAVAILABLE = (RedisError, OSError)


class _Keys(NamedTuple):
    routes: str
    version: str
    epoch: str
    activity: str
    channel: str

    @classmethod
    def of(cls, prefix):
        return cls(*(f"{prefix}:{name}" for name in ("routes", "version", "epoch", "activity", "changes")))

    @property
    def table(self):
        """The keys every table script takes, in its KEYS order."""
        return [self.routes, self.version, self.epoch, self.activity]


def mask_url(url):
    """``url`` with its password (in the user part or a ``password=`` query) shown as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _encode(target, data):
    try:
        return json.dumps({"target": target, "data": data}, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"route data must be JSON: {e}") from None


def _decode(value):
    stored = json.loads(value)
    return stored["target"], stored["data"]


class RedisRouteStore:
    """A ``RouteStore`` whose table lives in Redis, mirrored in ``plane.routes``.

    Args:
        plane: the DataPlane whose table this store keeps current.
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for
            TLS (redis-py's URL options, e.g. ``?ssl_ca_certs=/path``), or
            ``unix://``. Never logged with its password.
        log: the front-end's logger.
        password: used when the URL has none; default the environment
            variable ``INPROCESS_PROXY_REDIS_PASSWORD``.
        prefix: of every key and the channel; replicas sharing a prefix share
            a table.
        activity_interval: seconds between merges of local activity into
            Redis (and checks for a missed change).
        timeout: seconds a Redis command, or the wait for a written change
            to be applied here, may take before a write fails.
        connect_timeout: seconds to open a connection to Redis.
    """

    def __init__(
        self,
        plane,
        url,
        *,
        log,
        password=None,
        prefix=DEFAULT_PREFIX,
        activity_interval=1.0,
        timeout=5.0,
        connect_timeout=2.0,
    ):
        self.plane = plane
        self.log = log
        #: the URL as it may be logged
        self.display_url = mask_url(url)
        self.prefix = prefix
        self.keys = _Keys.of(prefix)
        self.activity_interval = activity_interval
        self.timeout = timeout
        if password is None:
            password = os.environ.get(PASSWORD_ENV) or None
        options = dict(socket_connect_timeout=connect_timeout, decode_responses=True)
        if password is not None and urlsplit(url).password is None:
            options["password"] = password
        # writes retry once at once: after Redis restarts, the first use of a
        # pooled connection fails and a new one succeeds
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, retry=Retry(NoBackoff(), 1), **options)
        # the follower never reconnects behind our back: a lost subscription
        # may have lost messages, so it must load the table again
        self._follower_redis = redis.Redis.from_url(
            url, socket_timeout=None, retry=Retry(NoBackoff(), 0), health_check_interval=FOLLOW_HEALTH_CHECK, **options
        )
        self._write = self._redis.register_script(_WRITE)
        self._create = self._redis.register_script(_CREATE)
        self._merge_activity = self._redis.register_script(_MERGE_ACTIVITY)

        #: the whole table has been loaded at least once (healthy from then on)
        self.ready = False
        # the data plane's health check answers 503 until then
        plane.routes.loaded = False
        #: the follower is subscribed and its table is current
        self.connected = False
        #: why not connected, for logs and error messages
        self.problem = "not started"
        #: the epoch and version the local table holds
        self.epoch = None
        self.version = 0
        # writers waiting for the follower: (epoch, version, future)
        self._waiters = []
        # held while the local table and version change: the follower applies
        # changes in version order, a writer applies its own if it is the next
        self._applying = asyncio.Lock()
        # set to make the follower load the table again; the future resolves when it has
        self._reload_requested = False
        self._reloaded = None
        self._loaded_once = None
        # routespec -> activity time known to be in Redis
        self._merged = {}
        # the version Redis had at the previous tick
        self._remote_version = None
        self._tasks = []
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------

    async def start(self):
        """Start following Redis; returns at once (see ``ready`` and ``wait_ready``)."""
        self._loaded_once = asyncio.get_running_loop().create_future()
        self.log.info("Route store: Redis at %s, keys %s:*", self.display_url, self.prefix)
        self._tasks = [
            asyncio.create_task(self._follow(), name="redis-route-store-follower"),
            asyncio.create_task(self._tick(), name="redis-route-store-activity"),
        ]

    async def wait_ready(self, timeout):
        """Wait until the whole table has been loaded once.

        Raises:
            TimeoutError: naming the URL and the problem, after ``timeout`` seconds.
        """
        try:
            await asyncio.wait_for(asyncio.shield(self._loaded_once), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"route table not loaded from Redis at {self.display_url} in {timeout:g} s: {self.problem}"
            ) from None

    async def stop(self):
        """Stop following; merge the last activity into Redis if it can; close connections."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # a cancel that lands as redis-py's read timeout fires can be lost
        # inside get_message; the loops then see _stopping on their next turn
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.connected:
            try:
                await asyncio.wait_for(self._push_activity(), self.timeout)
            except (*_UNAVAILABLE, asyncio.TimeoutError) as e:
                self.log.warning("Could not merge the last activity into Redis at %s: %s", self.display_url, e)
        self.connected = False
        self.problem = "stopped"
        self._fail_waiters(lambda epoch: True, "the route store stopped")
        await self._redis.aclose()
        await self._follower_redis.aclose()

    # --- the route store interface -----------------------------------------------

    async def add_route(self, routespec, target, data):
        """Add or replace a route in Redis; returns when this replica serves it.

        Raises:
            ValueError: for malformed input (nothing written).
            RouteStoreUnavailable: Redis could not be written (nothing changed).
        """
        data = self.plane.routes.check(routespec, target, data)
        await self._change("add", routespec, _encode(target, data))

    async def delete_route(self, routespec):
        """Delete a route in Redis; absent is fine. Raises as ``add_route`` does."""
        routespec_key(routespec, self.plane.routes.host_routing)
        await self._change("delete", routespec, "")

    async def get_route(self, routespec):
        """``{routespec, target, data}`` from the local table, with the newest activity of any replica."""
        if self.connected:
            try:
                score = await self._redis.zscore(self.keys.activity, routespec)
            except _UNAVAILABLE as e:
                self._log_stale_activity(e)
            else:
                if score is not None:
                    self._merged.update(await self.plane.merge_activity({routespec: score}))
        return await self.plane.get_route(routespec)

    async def get_all_routes(self, inactive_since=None):
        """All routes from the local table, with the newest activity of any replica."""
        if self.connected:
            try:
                times = await self._redis.zrange(self.keys.activity, 0, -1, withscores=True)
            except _UNAVAILABLE as e:
                self._log_stale_activity(e)
            else:
                self._merged.update(await self.plane.merge_activity(dict(times)))
        return await self.plane.get_all_routes(inactive_since)

    def _log_stale_activity(self, error):
        self.log.warning(
            "Listing routes with this replica's activity only: Redis at %s: %s", self.display_url, error
        )

    # --- writing ----------------------------------------------------------------

    async def _change(self, op, routespec, value):
        if not self.ready:
            raise RouteStoreUnavailable(f"the route table is not loaded from Redis at {self.display_url} yet: {self.problem}")
        version = -1
        for _ in range(2):
            epoch = self.epoch
            try:
                version = await self._write(
                    keys=self.keys.table, args=[epoch, op, routespec, value, self.keys.channel]
                )
            except _UNAVAILABLE as e:
                raise RouteStoreUnavailable(f"Redis at {self.display_url}: {e}") from e
            if version != -1:
                break
            # the table in Redis is not the one loaded here (Redis lost it, or
            # another replica re-created it): catch up, then write into that one
            await self._reload_now()
        if version == -1:
            raise RouteStoreUnavailable(f"the route table in Redis at {self.display_url} keeps changing its epoch")
        if version:
            async with self._applying:
                if self.epoch == epoch and self.version == version - 1:
                    # the next change: apply it now rather than wait for its message
                    await self._apply(version, op, routespec, value)
            try:
                await self._until_applied(epoch, version, self.timeout)
            except asyncio.TimeoutError:
                self._request_reload()
                raise RouteStoreUnavailable(
                    f"the change is in Redis at {self.display_url} (version {version}) but this replica did not"
                    f" receive it within {self.timeout:g} s; it is loading the table again"
                ) from None

    async def wait_applied(self, version, timeout):
        """Wait until the local table holds ``version`` of the current table (or later).

        Raises:
            asyncio.TimeoutError: after ``timeout`` seconds.
            RouteStoreUnavailable: the table in Redis was replaced meanwhile.
        """
        await self._until_applied(self.epoch, version, timeout)

    async def _until_applied(self, epoch, version, timeout):
        if self.epoch == epoch and self.version >= version:
            return
        future = asyncio.get_running_loop().create_future()
        waiter = (epoch, version, future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(waiter)

    def _wake_waiters(self):
        epoch, version = self.epoch, self.version
        for waiter_epoch, waiter_version, future in self._waiters:
            if waiter_epoch == epoch and waiter_version <= version and not future.done():
                future.set_result(None)
        # the table in Redis was replaced before these changes reached us
        self._fail_waiters(lambda waiter_epoch: waiter_epoch != epoch, "Redis lost the change (its table was replaced)")

    def _fail_waiters(self, which, reason):
        for waiter_epoch, _, future in self._waiters:
            if which(waiter_epoch) and not future.done():
                future.set_exception(RouteStoreUnavailable(reason))

    def _request_reload(self):
        """Make the follower load the whole table again; returns a future resolved when it has."""
        self._reload_requested = True
        if self._reloaded is None or self._reloaded.done():
            self._reloaded = asyncio.get_running_loop().create_future()
        return self._reloaded

    async def _reload_now(self):
        try:
            await asyncio.wait_for(asyncio.shield(self._request_reload()), self.timeout)
        except asyncio.TimeoutError:
            raise RouteStoreUnavailable(
                f"could not load the route table from Redis at {self.display_url}: {self.problem}"
            ) from None

    # --- following ----------------------------------------------------------------

    async def _follow(self):
        delay = RECONNECT_DELAY_FIRST
        while not self._stopping:
            pubsub = self._follower_redis.pubsub(ignore_subscribe_messages=True)
            try:
                # subscribe before the snapshot, so no change falls between them
                await pubsub.subscribe(self.keys.channel)
                await self._load()
                delay = RECONNECT_DELAY_FIRST
                while not self._stopping:
                    if self._reload_requested:
                        await self._load()
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=FOLLOW_POLL)
                    if message is not None and message["type"] == "message":
                        await self._receive(message["data"])
            except _UNAVAILABLE as e:
                self._set_disconnected(f"{type(e).__name__}: {e}")
            except Exception as e:
                # our bug: never stop following, start over from a snapshot
                self.log.exception("Route store follower failed; loading the table again")
                self._set_disconnected(f"{type(e).__name__}: {e}")
            finally:
                await pubsub.aclose()
            if self._stopping:
                return
            # a timer between reconnection attempts, not a synchronisation
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)

    def _set_disconnected(self, problem):
        if self.connected:
            self.log.warning(
                "Lost the route store, Redis at %s (%s); serving the %d routes held here, route changes"
                " fail until it is back",
                self.display_url, problem, len(self.plane.routes),
            )
        self.connected = False
        self.problem = problem

    async def _snapshot(self):
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.epoch)
            pipe.get(self.keys.version)
            pipe.hgetall(self.keys.routes)
            epoch, version, table = await pipe.execute()
        return epoch, int(version or 0), table

    async def _load(self):
        """Replace the local table with Redis's (creating Redis's if it has none)."""
        async with self._applying:
            await self._load_snapshot()

    async def _load_snapshot(self):
        self._reload_requested = False
        epoch, version, table = await self._snapshot()
        if epoch is None:
            seed = {}
            if self.epoch is not None:
                # we served a table from Redis before: Redis lost it
                exported = await self.plane.export_routes()
                seed = {spec: _encode(target, data) for spec, (target, data) in exported.items()}
            new_epoch = secrets.token_hex(8)
            args = [new_epoch, self.keys.channel]
            for item in seed.items():
                args.extend(item)
            if await self._create(keys=self.keys.table, args=args) == new_epoch and self.epoch is not None:
                self.log.warning(
                    "The route table in Redis at %s was gone (Redis restarted without its data?); seeded it"
                    " with the %d routes this replica serves",
                    self.display_url, len(seed),
                )
            epoch, version, table = await self._snapshot()
        routes = {}
        for routespec, value in table.items():
            try:
                routes[routespec] = _decode(value)
            except (ValueError, KeyError, TypeError) as e:
                self.log.error("Ignoring route %r in Redis at %s: not a stored route (%s)", routespec, self.display_url, e)
        self._log_refused(await self.plane.replace_routes(routes))
        changed_epoch = epoch != self.epoch
        self.epoch, self.version = epoch, version
        self._merged.clear()
        self._remote_version = None
        self.connected = True
        self.problem = None
        self._wake_waiters()
        if self._reloaded is not None and not self._reloaded.done():
            self._reloaded.set_result(None)
        if not self.ready:
            self.ready = self.plane.routes.loaded = True
            self._loaded_once.set_result(None)
            self.log.info("Loaded %d routes from Redis at %s (version %d)", len(routes), self.display_url, version)
        else:
            self.log.info(
                "Reloaded %d routes from Redis at %s (version %d%s)",
                len(routes), self.display_url, version, ", a new table" if changed_epoch else "",
            )

    def _log_refused(self, errors):
        for routespec, error in errors.items():
            # another replica accepted it: its options (host routing) differ from ours
            self.log.error("Route %r from Redis at %s is not served here: %s", routespec, self.display_url, error)

    async def _receive(self, raw):
        try:
            epoch, version, op, routespec, value = json.loads(raw)
        except (ValueError, TypeError):
            self.log.error("Route store: not a change message on %s: %.200r", self.keys.channel, raw)
            return
        async with self._applying:
            if epoch != self.epoch:
                self._request_reload()
            elif version <= self.version:
                pass  # in the snapshot loaded after subscribing, or applied by its writer
            elif version != self.version + 1 or op not in ("add", "delete"):
                self.log.warning(
                    "Route store: change %d after %d from Redis at %s; loading the whole table",
                    version, self.version, self.display_url,
                )
                self._request_reload()
            else:
                await self._apply(version, op, routespec, value)

    async def _apply(self, version, op, routespec, value):
        """Apply the change that is the next version; the caller holds ``_applying``."""
        if op == "add":
            target, data = _decode(value)
            try:
                await self.plane.add_route(routespec, target, data)
            except ValueError as e:
                self._log_refused({routespec: e})
        else:
            await self.plane.delete_route(routespec)
        self.version = version
        self._wake_waiters()

    # --- activity and the consistency check ------------------------------------

    async def _tick(self):
        while not self._stopping:
            # a period, not a synchronisation
            await asyncio.sleep(self.activity_interval)
            if self._stopping or not self.connected:
                continue
            try:
                await self._push_activity()
                await self._check_version()
            except _UNAVAILABLE as e:
                # the follower notices and reports a lost connection
                self.log.debug("Route store tick failed, Redis at %s: %s", self.display_url, e)
            except Exception:
                self.log.exception("Route store tick failed")

    async def _push_activity(self):
        times = await self.plane.activity_times()
        merged = self._merged
        changed = {spec: t for spec, t in times.items() if merged.get(spec) != t}
        if not changed:
            return
        args = []
        for spec, t in changed.items():
            args += (spec, repr(t))
        await self._merge_activity(keys=[self.keys.routes, self.keys.activity], args=args)
        merged.update(changed)
        if len(merged) > 2 * len(times):
            # deleted routes' entries
            self._merged = {spec: t for spec, t in merged.items() if spec in times}

    async def _check_version(self):
        loaded = self.epoch
        epoch, version = await self._redis.mget(self.keys.epoch, self.keys.version)
        version = int(version or 0)
        if loaded != self.epoch:
            return  # the follower loaded a table meanwhile; compare at the next tick
        if epoch != self.epoch:
            if not self._reload_requested:
                self.log.warning(
                    "Route store: the table in Redis at %s is %s; loading it",
                    self.display_url, "gone" if epoch is None else "a new one",
                )
                self._request_reload()
        elif self._remote_version is not None and self.version < self._remote_version:
            # a change Redis had one tick ago has not arrived: its message was lost
            self.log.warning(
                "Route store: version %d here, Redis at %s had %d a tick ago; loading the whole table",
                self.version, self.display_url, self._remote_version,
            )
            self._request_reload()
        self._remote_version = version
