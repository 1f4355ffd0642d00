"""inprocess-proxy: JupyterHub's proxy, inside the Hub.

Enable with ``c.JupyterHub.proxy_class = "inprocess"``.
"""

from ._version import __version__
from .proxy import InProcessProxy

__all__ = ["InProcessProxy", "__version__"]
