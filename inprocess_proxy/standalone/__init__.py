"""The ``inprocess-proxy`` command: a drop-in for configurable-http-proxy, as a front-end of the data plane.

- ``cli``: CHP's command line -> ``ProxyOptions`` and ``Settings``;
- ``api``: CHP's REST API over a ``RouteStore``;
- ``control``: the small HTTP server the API, metrics and redirect run on;
- ``main``: the process's lifecycle: start, signals, drain, logging.

Nothing here imports JupyterHub or traitlets.
"""

from .main import main

__all__ = ["main"]
