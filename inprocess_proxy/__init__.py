"""inprocess-proxy: JupyterHub's proxy, inside the Hub or as its own process.

Enable in a Hub with ``c.JupyterHub.proxy_class = "inprocess"``; run as a
drop-in for configurable-http-proxy with the ``inprocess-proxy`` command.

``InProcessProxy`` is imported on first use (module ``__getattr__``), so that
the command, which imports the data plane only, never imports JupyterHub or
traitlets.
"""

from ._version import __version__

__all__ = ["InProcessProxy", "__version__"]


def __getattr__(name):
    if name == "InProcessProxy":
        from .proxy import InProcessProxy

        return InProcessProxy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
