"""configurable-http-proxy's command line, turned into ``ProxyOptions`` and ``Settings``.

The flags, their names, arguments and defaults are CHP 5.3's
(``bin/configurable-http-proxy``), so a command line written for CHP works
unchanged. Every CHP flag is in the parser: the ones this proxy cannot honour
are listed under "Not supported" in ``--help`` and exit with an error naming
the flag, never silently ignored.

Departures from CHP, each deliberate and documented in ``docs/standalone.md``:

- ``--timeout`` and ``--proxy-timeout`` both bound how long the proxy waits
  for bytes from a target (``response_header_timeout`` and ``idle_timeout``);
  the client gets a 504 instead of an empty reply or a 503.
- ``--keep-alive-timeout`` defaults to the data plane's 75 s (CHP: 5 s).
- ``--port 0`` asks the system for a free port (CHP reads 0 as 8000).
- ``--ssl-key`` and ``--ssl-cert`` must come together.
"""

import argparse
import os
import re
from dataclasses import dataclass, field, replace
from typing import Optional
from urllib.parse import quote, urlsplit

from .._version import __version__
from ..http1 import HOP_BY_HOP
from ..options import ProxyOptions

__all__ = ["LOG_LEVELS", "Settings", "TLSFiles", "build_parser", "parse_args"]

PROG = "inprocess-proxy"

#: ``--log-level`` values (CHP's, and Python's spelling of warn) -> logging level names
LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING", "error": "ERROR"}

#: what a custom header may not set: hop-by-hop headers and the body's framing
_UNSETTABLE_HEADERS = {name.decode() for name in HOP_BY_HOP} | {"content-length"}
#: RFC 9110 5.6.2: a header name is a token
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class TLSFiles:
    """One listener's (or the upstream client's) TLS settings, as CHP's ``--*ssl-*`` flags give them."""

    key: Optional[str] = None
    cert: Optional[str] = None
    ca: Optional[str] = None
    request_cert: bool = False
    reject_unauthorized: bool = False

    @property
    def enabled(self):
        return bool(self.key or self.cert)


@dataclass(frozen=True)
class Settings:
    """Everything the command line says, ready for ``main.run``."""

    options: ProxyOptions
    #: where the proxy, the REST API and the metrics listen: ``http[s]://host:port``
    #: or ``http+unix://<quoted path>``; ``metrics_url`` None means no metrics
    public_url: str
    api_url: str
    metrics_url: Optional[str]
    ssl: TLSFiles
    api_ssl: TLSFiles
    client_ssl: TLSFiles
    ssl_protocol: Optional[str]
    ssl_ciphers: Optional[str]
    ssl_dhparam: Optional[str]
    insecure: bool
    default_target: Optional[str]
    error_target: Optional[str]
    error_path: Optional[str]
    host_routing: bool
    #: a logging level name
    log_level: str
    pid_file: Optional[str]
    #: the plain-http port answering with a redirect to https, and the port it
    #: names (None: the port the proxy listens on)
    redirect_port: Optional[int]
    redirect_to: Optional[int]
    #: --route-store: the shared route table's URL (``redis://``, ``rediss://``,
    #: ``unix://``), or None to keep routes in memory
    route_store: Optional[str] = None
    #: things to say once logging is set up (CHP's warnings about the command line)
    warnings: tuple = field(default_factory=tuple)


class _Refuse(argparse.Action):
    """A CHP flag this proxy does not honour: using it is an error naming it."""

    def __init__(self, option_strings, dest, reason, **kwargs):
        self.reason = reason
        kwargs["help"] = f"Not supported: exits with an error. {reason}"
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is a configurable-http-proxy flag {PROG} does not support: {self.reason}")


def _port(text):
    """A TCP port number (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port


def _milliseconds(text):
    """A non-negative number of milliseconds, as CHP's timeouts take them."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of milliseconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more milliseconds, not {value}")
    return value


#: what --route-store accepts (redis-py's URL schemes)
ROUTE_STORE_SCHEMES = ("redis", "rediss", "unix")


def _route_store_url(text):
    """A Redis URL; its scheme checked here, the rest by redis-py when the store starts."""
    scheme = urlsplit(text).scheme.lower()
    if scheme not in ROUTE_STORE_SCHEMES:
        # never echo the URL: it may hold a password
        raise argparse.ArgumentTypeError(
            f"not a Redis URL (scheme {scheme or 'missing'!r}): use redis://, rediss:// or unix://"
        )
    return text


def _log_level(text):
    level = LOG_LEVELS.get(text.lower())
    if level is None:
        raise argparse.ArgumentTypeError(f"{text!r}: choose one of debug, info, warn, error")
    return level


def custom_header(text):
    """``"name: value"`` -> ``(name, value)``, split at the first colon and trimmed, as CHP does.

    Refuses what would change how a request is framed or let a value start a
    new header line.
    """
    text = text.strip()
    colon = text.find(":")
    if colon <= 0:
        raise argparse.ArgumentTypeError(f"A colon was expected in custom header: {text}")
    name, value = text[:colon].strip(), text[colon + 1 :].strip()
    if not _TOKEN.match(name):
        raise argparse.ArgumentTypeError(f"not a header name: {name!r}")
    if name.lower() in _UNSETTABLE_HEADERS:
        raise argparse.ArgumentTypeError(f"{name} cannot be set: it is hop-by-hop or frames the body")
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        raise argparse.ArgumentTypeError(f"control characters in the value of custom header {name}")
    try:
        return name.encode("latin-1"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"custom header {name}: only latin-1 text can be sent") from None


def build_parser():
    """The argparse parser: CHP 5.3's flags, with this proxy's help text."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "A drop-in for configurable-http-proxy (CHP), without Node.js: the same flags,"
            " REST API and CONFIGPROXY_AUTH_TOKEN, on inprocess-proxy's data plane."
        ),
        epilog=(
            "Environment: CONFIGPROXY_AUTH_TOKEN is the token the REST API requires"
            " (`Authorization: token <token>`); without it one is generated and logged."
            " CONFIGPROXY_SSL_KEY_PASSPHRASE and CONFIGPROXY_API_SSL_KEY_PASSPHRASE unlock"
            " encrypted --ssl-key and --api-ssl-key files."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")

    listen = parser.add_argument_group("Where to listen")
    listen.add_argument("--ip", metavar="<ip-address>", help="Public-facing IP of the proxy (default: all interfaces)")
    listen.add_argument("--port", metavar="<n>", type=_port, help="Public-facing port of the proxy (default: 8000)")
    listen.add_argument(
        "--socket",
        metavar="<path>",
        help="Path to a UNIX domain socket for the proxy to listen on. Alternative to specifying IP and port.",
    )
    listen.add_argument("--api-ip", metavar="<ip>", help="Inward-facing IP for API requests (default: localhost)")
    listen.add_argument(
        "--api-port", metavar="<n>", type=_port, help="Inward-facing port for API requests (default: --port + 1)"
    )
    listen.add_argument(
        "--api-socket",
        metavar="<path>",
        help="Path to a UNIX domain socket for the API server to listen on. Alternative to specifying API IP and port.",
    )
    listen.add_argument(
        "--metrics-ip", metavar="<ip>", help="IP for the metrics server (default: all interfaces, as CHP)"
    )
    listen.add_argument(
        "--metrics-port", metavar="<n>", type=_port, help="Port of the metrics server. Defaults to no metrics server"
    )
    listen.add_argument(
        "--metrics-socket",
        metavar="<path>",
        help="Path to a UNIX domain socket for the metrics server to listen on. Alternative to metrics IP and port.",
    )
    listen.add_argument("--pid-file", metavar="<pid-file>", help="Write our PID to a file; removed at exit")
    listen.add_argument(
        "--redirect-port",
        metavar="<redirect-port>",
        type=_port,
        help="Redirect HTTP requests on this port to the server on HTTPS (needs --ssl-key and --ssl-cert)",
    )
    listen.add_argument(
        "--redirect-to",
        metavar="<port>",
        type=_port,
        help="Redirect HTTP requests from --redirect-port to this port (default: --port)",
    )

    tls = parser.add_argument_group("TLS")
    tls.add_argument("--ssl-key", metavar="<keyfile>", help="SSL key to use, if any")
    tls.add_argument("--ssl-cert", metavar="<certfile>", help="SSL certificate to use, if any")
    tls.add_argument("--ssl-ca", metavar="<ca-file>", help="SSL certificate authority, if any")
    tls.add_argument("--ssl-request-cert", action="store_true", help="Request SSL certs to authenticate clients")
    tls.add_argument(
        "--ssl-reject-unauthorized",
        action="store_true",
        help="Reject unauthorized SSL connections (only meaningful if --ssl-request-cert is given)",
    )
    tls.add_argument(
        "--ssl-protocol",
        metavar="<ssl-protocol>",
        help="Set specific SSL protocol, e.g. TLSv1_2 (pins that one version, as CHP does)",
    )
    tls.add_argument("--ssl-ciphers", metavar="<ciphers>", help="`:`-separated ssl cipher list (OpenSSL format)")
    tls.add_argument(
        "--ssl-allow-rc4",
        action="store_true",
        help="Accepted for CHP's command lines; no effect, as in CHP (RC4 is never allowed); a warning is logged",
    )
    tls.add_argument("--ssl-dhparam", metavar="<dhparam-file>", help="SSL Diffie-Helman Parameters pem file, if any")
    tls.add_argument("--api-ssl-key", metavar="<keyfile>", help="SSL key to use, if any, for API requests")
    tls.add_argument("--api-ssl-cert", metavar="<certfile>", help="SSL certificate to use, if any, for API requests")
    tls.add_argument("--api-ssl-ca", metavar="<ca-file>", help="SSL certificate authority, if any, for API requests")
    tls.add_argument(
        "--api-ssl-request-cert", action="store_true", help="Request SSL certs to authenticate clients for API requests"
    )
    tls.add_argument(
        "--api-ssl-reject-unauthorized",
        action="store_true",
        help="Reject unauthorized SSL connections (only meaningful if --api-ssl-request-cert is given)",
    )
    tls.add_argument(
        "--client-ssl-key", metavar="<keyfile>", help="SSL key to use, if any, for proxy to client requests"
    )
    tls.add_argument(
        "--client-ssl-cert", metavar="<certfile>", help="SSL certificate to use, if any, for proxy to client requests"
    )
    tls.add_argument(
        "--client-ssl-ca",
        metavar="<ca-file>",
        help="SSL certificate authority, if any, for proxy to client requests (default: the system's)",
    )
    tls.add_argument(
        "--client-ssl-request-cert",
        action="store_true",
        help="Accepted for CHP's command lines (JupyterHub passes it); https targets are always verified",
    )
    tls.add_argument(
        "--client-ssl-reject-unauthorized",
        action="store_true",
        help="Accepted for CHP's command lines (JupyterHub passes it); https targets are always verified",
    )
    tls.add_argument(
        "--insecure", action="store_true", help="Disable SSL cert verification of https targets"
    )

    routing = parser.add_argument_group("Routing and forwarding")
    routing.add_argument(
        "--default-target", metavar="<host>", help="Default proxy target (proto://host[:port]), the route /"
    )
    routing.add_argument(
        "--error-target",
        metavar="<host>",
        help="Alternate server for handling proxy errors (proto://host[:port]): GET {target}/{code}?url=...",
    )
    routing.add_argument(
        "--error-path",
        metavar="<path>",
        help="Directory of error pages, {code}.html or else error.html, read at start",
    )
    routing.add_argument(
        "--host-routing", action="store_true", help="Use host routing (host as first level of path)"
    )
    routing.add_argument(
        "--custom-header",
        metavar="<header>",
        type=custom_header,
        action="append",
        default=[],
        help=(
            "Custom header to add to proxied requests, replacing any of that name. Use same option for"
            " multiple headers (--custom-header k1:v1 --custom-header k2:v2)"
        ),
    )
    routing.add_argument(
        "--timeout",
        metavar="<n>",
        type=_milliseconds,
        help="Milliseconds a target may send nothing while a request waits or its body moves; then 504",
    )
    routing.add_argument(
        "--proxy-timeout",
        metavar="<n>",
        type=_milliseconds,
        help="Milliseconds a target may send nothing (its response head or body); then 504. With --timeout, the shorter wins",
    )
    routing.add_argument(
        "--keep-alive-timeout",
        metavar="<timeout>",
        type=_milliseconds,
        help=(
            f"Milliseconds an idle keep-alive client connection is kept open"
            f" (default: {ProxyOptions.client_keep_alive_timeout * 1000:.0f}, longer than load balancers')"
        ),
    )
    store = parser.add_argument_group("Several replicas (not in configurable-http-proxy)")
    store.add_argument(
        "--route-store",
        metavar="<url>",
        type=_route_store_url,
        help=(
            "Keep the route table in Redis, shared by every replica given the same URL:"
            " redis://HOST[:PORT][/DB], rediss:// for TLS (redis-py's URL options, e.g."
            " ?ssl_ca_certs=<ca-file>), or unix://<path>. The password comes from the URL or, kept off"
            " the command line, from $INPROCESS_PROXY_REDIS_PASSWORD; the URL is logged with it masked."
            " /_chp_healthz answers 503 until the whole table is loaded; route changes answer 503 while"
            " Redis cannot be reached. Default: routes in memory, as CHP"
        ),
    )
    logging = parser.add_argument_group("Logging")
    logging.add_argument(
        "--log-level",
        metavar="<loglevel>",
        type=_log_level,
        default="INFO",
        help="Log level (debug, info, warn, error), default info",
    )

    refused = parser.add_argument_group("Not supported (configurable-http-proxy flags that exit with an error)")
    refused.add_argument(
        "--no-x-forward", action=_Refuse, nargs=0, reason="X-Forwarded-* headers are always added."
    )
    refused.add_argument(
        "--no-prepend-path", action=_Refuse, nargs=0, reason="a target's path is always prepended."
    )
    refused.add_argument(
        "--no-include-prefix", action=_Refuse, nargs=0, reason="the route's prefix is always forwarded."
    )
    refused.add_argument(
        "--auto-rewrite", action=_Refuse, nargs=0, reason="Location headers are passed on as targets send them."
    )
    refused.add_argument(
        "--change-origin", action=_Refuse, nargs=0, reason="the client's Host header is always forwarded."
    )
    refused.add_argument(
        "--protocol-rewrite",
        action=_Refuse,
        nargs=1,
        metavar="<proto>",
        reason="Location headers are passed on as targets send them.",
    )
    refused.add_argument(
        "--storage-backend",
        action=_Refuse,
        nargs=1,
        metavar="<storage-class>",
        reason="CHP's backends are JavaScript modules; --route-store keeps the routes in Redis.",
    )
    return parser


def _url(scheme, host, port):
    if host and ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host or ''}:{port}"


def _unix_url(path):
    return "http+unix://" + quote(os.path.abspath(path), safe="")


def _tls(args, prefix):
    return TLSFiles(
        key=getattr(args, f"{prefix}ssl_key"),
        cert=getattr(args, f"{prefix}ssl_cert"),
        ca=getattr(args, f"{prefix}ssl_ca"),
        request_cert=getattr(args, f"{prefix}ssl_request_cert"),
        reject_unauthorized=getattr(args, f"{prefix}ssl_reject_unauthorized"),
    )


def _options(args):
    """The data plane's settings from the timeout and header flags."""
    options = ProxyOptions()
    changes = {}
    waits = [ms / 1000 for ms in (args.timeout, args.proxy_timeout) if ms]
    if waits:
        seconds = min(waits)
        changes["response_header_timeout"] = seconds
        changes["idle_timeout"] = seconds
    if args.keep_alive_timeout is not None:
        changes["client_keep_alive_timeout"] = args.keep_alive_timeout / 1000
    if args.custom_header:
        # the last value given for a name wins, as in CHP
        by_name = {name.lower(): (name, value) for name, value in args.custom_header}
        changes["custom_headers"] = tuple(by_name.values())
    return replace(options, **changes)


def parse_args(argv=None, parser=None):
    """``argv`` (default ``sys.argv[1:]``) -> Settings; exits with a message naming the problem."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    warnings = []

    def conflict(alternative, *flags):
        given = [flag for flag in flags if getattr(args, flag.lstrip("-").replace("-", "_")) is not None]
        if given:
            parser.error(f"{alternative} cannot be used with {' or '.join(given)}")

    if args.socket:
        conflict("--socket", "--ip", "--port")
    if args.api_socket:
        conflict("--api-socket", "--api-ip", "--api-port")
    if args.metrics_socket:
        conflict("--metrics-socket", "--metrics-ip", "--metrics-port")

    ssl = _tls(args, "")
    api_ssl = _tls(args, "api_")
    for flags, files in (("--ssl-key and --ssl-cert", ssl), ("--api-ssl-key and --api-ssl-cert", api_ssl)):
        if files.enabled and not (files.key and files.cert):
            parser.error(f"{flags} must be given together")
    client_ssl = TLSFiles(key=args.client_ssl_key, cert=args.client_ssl_cert, ca=args.client_ssl_ca)
    if bool(client_ssl.key) != bool(client_ssl.cert):
        parser.error("--client-ssl-key and --client-ssl-cert must be given together")
    if args.redirect_port is not None and not ssl.enabled:
        parser.error("HTTPS redirection specified but certificates not provided.")
    if args.error_target and args.error_path:
        parser.error("Cannot specify both error-target and error-path. Pick one.")
    if args.error_path and not os.path.isdir(args.error_path):
        parser.error(f"--error-path {args.error_path}: not a directory")
    if args.route_store and urlsplit(args.route_store).password:
        warnings.append(
            "--route-store: the Redis password is on the command line, where other users of this machine"
            " can read it (ps); prefer $INPROCESS_PROXY_REDIS_PASSWORD"
        )
    if args.ssl_allow_rc4:
        warnings.append("--ssl-allow-rc4 has no effect (as in configurable-http-proxy): RC4 is never allowed")

    scheme = "https" if ssl.enabled else "http"
    port = args.port if args.port is not None else 8000
    ip = args.ip
    if ip == "*":
        warnings.append(
            "Interpreting ip='*' as all-interfaces. Preferred usage is 0.0.0.0 for all IPv4 or '' for all-interfaces."
        )
        ip = ""
    if args.socket:
        public_url = _unix_url(args.socket)
    else:
        public_url = _url(scheme, ip, port)

    if args.api_socket:
        api_url = _unix_url(args.api_socket)
    else:
        api_port = args.api_port if args.api_port is not None else (8001 if args.socket or not port else port + 1)
        api_ip = args.api_ip if args.api_ip is not None else "localhost"
        api_url = _url("https" if api_ssl.enabled else "http", api_ip, api_port)

    metrics_url = None
    if args.metrics_socket:
        metrics_url = _unix_url(args.metrics_socket)
    elif args.metrics_port is not None:
        metrics_url = _url("http", args.metrics_ip or "", args.metrics_port)

    redirect_port = args.redirect_port
    if redirect_port is not None and (args.socket or port == 80):
        # CHP redirects only when the proxy listens on TCP, not on port 80
        warnings.append(f"--redirect-port {redirect_port} ignored: the proxy does not listen on a TCP port other than 80")
        redirect_port = None

    return Settings(
        options=_options(args),
        public_url=public_url,
        api_url=api_url,
        metrics_url=metrics_url,
        ssl=ssl,
        api_ssl=api_ssl,
        client_ssl=client_ssl,
        ssl_protocol=args.ssl_protocol,
        ssl_ciphers=args.ssl_ciphers,
        ssl_dhparam=args.ssl_dhparam,
        insecure=args.insecure,
        default_target=args.default_target,
        error_target=args.error_target,
        error_path=args.error_path,
        host_routing=args.host_routing,
        log_level=args.log_level,
        pid_file=args.pid_file,
        redirect_port=redirect_port,
        redirect_to=args.redirect_to,
        route_store=args.route_store,
        warnings=tuple(warnings),
    )

