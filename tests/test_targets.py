"""parse_target: route targets as JupyterHub writes them, and what it refuses."""

from urllib.parse import urlsplit

import pytest

from inprocess_proxy.targets import parse_target

#: targets whose host and port must come out as urllib.parse reads them
HOST_PORT_TARGETS = [
    "http://127.0.0.1:8888",
    "http://127.0.0.1:8888/",
    "http://127.0.0.1:8888/user/alice",
    "http://127.0.0.1",
    "http://127.0.0.1:",
    "https://Hub.Example.ORG:8443/",
    "HTTP://Jupyter-Alice:80",
    "http://localhost:0",
    "http://localhost:65535",
    "http://[::1]:8888/",
    "http://[::1]/",
    "http://[FE80::1%25Eth0]:8000",
    "http://user:secret@Example.com:8081",
    "http://user@example.com",
]

INVALID_TARGETS = [
    "http://127.0.0.1:99999",
    "http://127.0.0.1:65536",
    "http://127.0.0.1:-1",
    "http://127.0.0.1:80a",
    "http://127.0.0.1:8888:9",
    "http://127.0.0.1:\u0661\u0662",
    "http://[::1]:x/",
    "http://:8888",
    "http://",
    "http://user@:80",
    "ftp://127.0.0.1:21",
    "http://127.0.0.1:8888/?x=1",
    "http://127.0.0.1:8888/#x",
    "http+unix://",
]


@pytest.mark.parametrize("target", HOST_PORT_TARGETS)
def test_host_and_port_are_urllibs(target):
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    endpoint = parse_target(target)
    assert (endpoint.host, endpoint.port) == (parts.hostname, parts.port or {"http": 80, "https": 443}[scheme])
    assert endpoint.key == (scheme, endpoint.host, endpoint.port)
    assert endpoint.tls == (scheme == "https")
    assert endpoint.prefix == parts.path.rstrip("/").encode()


@pytest.mark.parametrize("target", INVALID_TARGETS)
def test_invalid_target_raises_value_error_naming_it(target):
    with pytest.raises(ValueError) as excinfo:
        parse_target(target)
    assert repr(target) in str(excinfo.value)


def test_unix_socket_target():
    endpoint = parse_target("http+unix://%2Ftmp%2Fjupyter%20alice.sock/user/alice/")
    assert endpoint.unix_path == "/tmp/jupyter alice.sock"
    assert endpoint.key == ("unix", "/tmp/jupyter alice.sock")
    assert endpoint.prefix == b"/user/alice"
    assert endpoint.host_header == b"localhost"
