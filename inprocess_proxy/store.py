"""The route store interface: where a front-end's route changes go.

A front-end (the CHP-compatible REST API, the Hub plugin) changes and lists
routes through a ``RouteStore``. The data path never asks the store: it
matches requests against the in-memory ``RouteTable`` of its ``DataPlane``,
which every store keeps current.

- The in-memory store is the ``DataPlane`` itself: its table is the truth.
- A shared store (Redis) writes each change to the shared table before it
  answers, and applies the changes any replica made to its local table, so
  several proxy processes serve one route table. It also has a lifecycle
  (``start()``, ``stop()``) and a ``ready`` flag, false until it has loaded
  the whole shared table once: a front-end reports unhealthy until then.
  When the shared store cannot be reached, writes raise
  ``RouteStoreUnavailable`` and change nothing; reads answer from the local
  table.
"""

from typing import Optional, Protocol

__all__ = ["RouteStore", "RouteStoreUnavailable"]


class RouteStoreUnavailable(RuntimeError):
    """A shared route store could not take a change; nothing was changed.

    A REST front-end answers 503 with ``str(error)``, which reads
    ``route store unavailable: <reason>``.
    """

    status_hint = 503

    def __init__(self, reason):
        super().__init__(f"route store unavailable: {reason}")
        self.reason = reason


class RouteStore(Protocol):
    """Routes as JupyterHub's Proxy API sees them: routespec, target, data."""

    async def add_route(self, routespec: str, target: str, data: dict) -> object:
        """Add or replace a route; stored (and served locally) when it returns.

        Raises:
            ValueError: naming the routespec, for malformed input; nothing changed.
            RouteStoreUnavailable: a shared store could not be written; nothing changed.
        """

    async def delete_route(self, routespec: str) -> object:
        """Delete a route; absent is fine. Raises RouteStoreUnavailable as ``add_route`` does."""

    async def get_route(self, routespec: str) -> Optional[dict]:
        """``{routespec, target, data}`` with ``data["last_activity"]`` once seen, or None."""

    async def get_all_routes(self, inactive_since: Optional[float] = None) -> dict:
        """``{routespec: {routespec, target, data}}``; ``inactive_since`` (a ``time.time()``)
        keeps only routes with no activity since then."""
