"""pytest plugin: run JupyterHub's *shipped* test suite against another Proxy class.

Usage: see README.md beside this file. In short (from a directory that is NOT a jupyterhub checkout):

    JUPYTERHUB_TEST_PROXY_CLASS=inprocess            # entry-point name, or
    JUPYTERHUB_TEST_PROXY_CLASS=mypkg.proxy:InProcessProxy   # module:attr, or mypkg.proxy.InProcessProxy
    PYTHONPATH=/dir/containing/this/file \
    python -m pytest -c pytest.ini -p jh_proxy_plugin --pyargs jupyterhub.tests.test_api

Mechanism: MockHub (jupyterhub/tests/mocking.py) is instantiated by the `app`
fixture (conftest.py) and by several tests directly.  It has no config file
(load_config_file is a no-op), so the cleanest hook is to give MockHub a
dynamic traitlets default for `proxy_class`.  traitlets 5 looks up
`_<trait>_default` in the instance's class __dict__ before the registered
default generators (HasTraits._get_trait_default_generator), so assigning
`MockHub._proxy_class_default` after import works and still lets explicit
config/kwargs override it.

CHP-only tests (they talk to proxy.api_url / proxy_process / spawn the
`configurable-http-proxy` binary) are skipped when a non-CHP class is active.
Set JUPYTERHUB_TEST_PROXY_KEEP_CHP_TESTS=1 to run them anyway.

Written first as a standalone plugin outside this repository and vendored here,
so that a fresh clone can run the suite. ``tests/test_jupyterhub.py`` runs it
in child pytest processes. Changes from the standalone version:

- every collected test gets a ``module`` user property (the test file's stem),
  so ``--junitxml`` reports can be counted per module: with ``--pyargs`` and a
  rootdir outside site-packages the node ids are just ``::test_name`` and the
  junit ``classname`` is empty;
- ``ensure_allow_root()``, which the driver calls before starting children.
"""

import importlib
import os
import sys

import pytest

# node-id suffixes of tests that only make sense for ConfigurableHTTPProxy
CHP_ONLY = {
    # launches its own `configurable-http-proxy` binary, uses api_url/auth_token,
    # and PATCHes /hub/api/proxy with a new api_url
    "test_proxy.py::test_external_proxy": "external CHP process + api_url/auth_token",
    # constructs ConfigurableHTTPProxy directly and inspects proxy_process.args
    "test_proxy.py::test_proxy_bind_ip": "constructs ConfigurableHTTPProxy explicitly",
    # asserts CHP argv (--socket/--api-socket) and GETs {api_url}/api/routes
    "test_unix_socket.py::test_unix_socket_proxy": "asserts CHP argv + CHP REST API",
    # GETs app.proxy.api_url (CHP REST API) expecting an SSL error
    "test_internal_ssl_connections.py::test_connection_proxy_api_wrong_certs": "CHP REST API over internal ssl",
}


def _resolve(spec):
    from jupyterhub.app import JupyterHub

    if ":" in spec:
        mod, _, attr = spec.partition(":")
        return getattr(importlib.import_module(mod), attr)
    # same resolution as c.JupyterHub.proxy_class = "<spec>":
    # entry point group jupyterhub.proxies first, then dotted import string
    trait = JupyterHub.class_traits()["proxy_class"]
    registry = trait.load_entry_points()
    if spec.lower() in registry:
        return registry[spec.lower()].load()
    mod, _, attr = spec.rpartition(".")
    return getattr(importlib.import_module(mod), attr)


_proxy_cls = None


def _install_fake_dns():
    """Resolve *.localhost.jovyan.org (JUPYTERHUB_TEST_SUBDOMAIN_HOST) to 127.0.0.1.

    Upstream CI relies on public wildcard DNS for localhost.jovyan.org; sandboxes
    without DNS can't run the subdomain/host-routing variant without this.
    Enable with JUPYTERHUB_TEST_FAKE_DNS=1.
    """
    import socket

    real_getaddrinfo = socket.getaddrinfo
    suffix = os.environ.get("JUPYTERHUB_TEST_FAKE_DNS_SUFFIX", "localhost.jovyan.org")

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode("idna")
        if isinstance(host, str) and (host == suffix or host.endswith("." + suffix)):
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def pytest_configure(config):
    global _proxy_cls
    if os.environ.get("JUPYTERHUB_TEST_FAKE_DNS"):
        _install_fake_dns()
    spec = os.environ.get("JUPYTERHUB_TEST_PROXY_CLASS")
    if not spec:
        return
    _proxy_cls = _resolve(spec)
    from jupyterhub.proxy import ConfigurableHTTPProxy, Proxy
    from jupyterhub.tests import mocking

    assert issubclass(_proxy_cls, Proxy), _proxy_cls
    mocking.MockHub._proxy_class_default = lambda self: _proxy_cls
    config._jh_proxy_is_chp = issubclass(_proxy_cls, ConfigurableHTTPProxy)


def pytest_report_header(config):
    if _proxy_cls is not None:
        return f"jupyterhub proxy_class: {_proxy_cls.__module__}.{_proxy_cls.__qualname__}"


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.user_properties.append(("module", item.path.stem))
    if _proxy_cls is None or getattr(config, "_jh_proxy_is_chp", True):
        return
    if os.environ.get("JUPYTERHUB_TEST_PROXY_KEEP_CHP_TESTS"):
        return
    for item in items:
        # with --pyargs and a rootdir outside site-packages, item.nodeid is just
        # "::test_name", so build "<file>::<function>" ourselves
        key = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        for suffix, why in CHP_ONLY.items():
            if key == suffix:
                item.add_marker(pytest.mark.skip(reason=f"CHP-specific: {why}"))


ALLOW_ROOT_LINE = "c.ServerApp.allow_root = True"


def ensure_allow_root(prefix=None):
    """As root, let the suite's real single-user servers start; return the config file changed, or None.

    jupyter-server refuses to run as root without ``--allow-root``, and the
    suite's spawners pass no such option, so every test with a real
    single-user server would time out (hub.md, section 3.2, gotcha 4). The
    only place the suite's children read that is a config file: this writes
    ``{sys.prefix}/etc/jupyter/jupyter_server_config.py`` with
    ``c.ServerApp.allow_root = True``, or appends that line to an existing
    file that lacks it (hub.md reports that a JSON file in
    ``jupyter_server_config.d/`` was not picked up). Only inside the
    environment running the tests, only as root.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    config_dir = os.path.join(prefix or sys.prefix, "etc", "jupyter")
    path = os.path.join(config_dir, "jupyter_server_config.py")
    try:
        with open(path) as f:
            current = f.read()
    except FileNotFoundError:
        current = None
    if current is not None and "allow_root" in current:
        return None
    os.makedirs(config_dir, exist_ok=True)
    text = (current.rstrip("\n") + "\n" if current else "")
    text += "# added by inprocess-proxy's tests: the suite runs single-user servers as root\n"
    text += ALLOW_ROOT_LINE + "\n"
    # write-then-rename: concurrent test runs never see half a file
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
