"""The route store interface: where a front-end's route changes go.

A front-end (the CHP-compatible REST API, the Hub plugin) changes and lists
routes through a ``RouteStore``. The data path never asks the store: it
matches requests against the in-memory ``RouteTable`` of its ``DataPlane``,
which every store keeps current.

- The in-memory store is the ``DataPlane`` itself: its table is the truth.
- A shared store (Redis) writes each change to the shared table before it
  answers, and applies the changes any replica made to its local table, so
  several proxy processes serve one route table.
"""

from typing import Optional, Protocol

__all__ = ["RouteStore"]


class RouteStore(Protocol):
    """Routes as JupyterHub's Proxy API sees them: routespec, target, data."""

    async def add_route(self, routespec: str, target: str, data: dict) -> object:
        """Add or replace a route; stored (and served locally) when it returns.

        Raises:
            ValueError: naming the routespec, for malformed input; nothing changed.
        """

    async def delete_route(self, routespec: str) -> object:
        """Delete a route; absent is fine."""

    async def get_route(self, routespec: str) -> Optional[dict]:
        """``{routespec, target, data}`` with ``data["last_activity"]`` once seen, or None."""

    async def get_all_routes(self, inactive_since: Optional[float] = None) -> dict:
        """``{routespec: {routespec, target, data}}``; ``inactive_since`` (a ``time.time()``)
        keeps only routes with no activity since then."""
