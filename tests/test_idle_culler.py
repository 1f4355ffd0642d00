"""jupyterhub-idle-culler sees the activity InProcessProxy records.

A real Hub runs the culler as a managed service with a short timeout. Two
users' servers start together; one gets HTTP requests through the proxy
every couple of seconds, the other none. The idle one must be culled, and
the busy one must still run when a server without recorded activity would
certainly have been culled (CULLED_BY).

The proxy must be the only source of activity for the busy server, or the
test would prove nothing: the single-user server also reports its own
activity to the Hub (POST to ``$JUPYTERHUB_ACTIVITY_URL`` every
``$JUPYTERHUB_ACTIVITY_INTERVAL`` seconds, 300 by default, and once at
start). Setting that interval to 0 in the spawner's environment switches the
reporting off (jupyterhub/singleuser/extension.py, ``keep_activity_updated``
logs "Activity events disabled"); the test checks that line is in the log.
What is left is the Hub polling the proxy's routes every
``last_activity_interval`` seconds and copying each route's
``last_activity`` to its server, which the culler then reads. (Checked by
hand: the same requests sent to the server directly, bypassing the proxy, do
not save it; it is culled with the idle one.)
"""

import time
from datetime import datetime, timezone

# the Hub runs it as `python -m jupyterhub_idle_culler` from this venv: fail here, clearly, if it is missing
import jupyterhub_idle_culler  # noqa: F401
import pytest
import requests

from realhub import RealHub

#: the culler's --timeout: seconds without activity before a server is culled.
#: The Hub stamps a server's last activity when its spawn is requested, and
#: proxied requests can count only once it is ready, so this must exceed a
#: spawn (10-25 s here on a loaded 2-core machine) plus one activity poll.
IDLE_TIMEOUT = 45
#: the culler's --cull-every: seconds between its checks
CULL_EVERY = 5
#: JupyterHub.last_activity_interval: seconds between the Hub's polls of the proxy's routes
ACTIVITY_INTERVAL = 5
#: seconds between the requests that keep the busy server active
PING_INTERVAL = 2
#: seconds after the spawns were requested by which a server with no
#: recorded activity since then has certainly been culled
CULLED_BY = IDLE_TIMEOUT + ACTIVITY_INTERVAL + 2 * CULL_EVERY
#: seconds the whole sequence may take before the test gives up
DEADLINE = CULLED_BY + 90

CULLER_CONFIG = f"""
import sys
c.JupyterHub.last_activity_interval = {ACTIVITY_INTERVAL}
# see the module docstring: no activity reports from the servers themselves
c.Spawner.environment["JUPYTERHUB_ACTIVITY_INTERVAL"] = "0"
c.JupyterHub.services.append(
    {{
        "name": "idle-culler",
        "command": [
            sys.executable, "-m", "jupyterhub_idle_culler",
            "--timeout={IDLE_TIMEOUT}", "--cull-every={CULL_EVERY}",
        ],
    }}
)
# the scopes the culler's README asks for (admin:users only for --cull-users)
c.JupyterHub.load_roles.append(
    {{
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }}
)
"""

BUSY = "busy"
IDLE = "idle"


@pytest.fixture
def hub(tmp_path):
    hub = RealHub(tmp_path / "hub", config=CULLER_CONFIG)
    hub.start()
    yield hub
    hub.stop()


@pytest.mark.timeout(300)
def test_culler_spares_the_server_with_proxied_traffic(hub):
    with requests.Session() as session, hub.log_shown_on_failure():
        session.headers["Authorization"] = f"token {hub.token}"
        requested_at = datetime.now(timezone.utc)
        started = time.monotonic()
        hub.start_servers(BUSY, IDLE, wait=False)
        pings = 0
        culled_after = None
        # Until the idle server is gone and a server without activity would
        # certainly have been culled too: busy gets a request through the
        # proxy every PING_INTERVAL from the moment it is ready.
        while culled_after is None or time.monotonic() - started < CULLED_BY:
            elapsed = time.monotonic() - started
            assert elapsed < DEADLINE, f"{IDLE}'s server not culled within {DEADLINE} s"
            busy = hub.server_state(BUSY)
            assert busy is not None, f"{BUSY}'s server was culled after {elapsed:.0f} s despite its traffic"
            if busy["ready"]:
                response = session.get(f"{hub.public_url}/user/{BUSY}/api/status", timeout=10)
                assert response.status_code == 200, (response.status_code, response.text[:500])
                pings += 1
            if culled_after is None and hub.server_state(IDLE) is None:
                culled_after = elapsed
            time.sleep(PING_INTERVAL)

        log = hub.log_path.read_text(errors="replace")
        assert log.count("Activity events disabled") == 2, "single-user servers report their own activity"
        assert f"Culling server {IDLE} " in log
        assert f"Culling server {BUSY} " not in log
        # busy's last activity in the Hub came from the proxy's route, polled
        # after the time busy would have been culled without it
        last_activity = datetime.fromisoformat(busy["last_activity"].replace("Z", "+00:00"))
        assert (last_activity - requested_at).total_seconds() > IDLE_TIMEOUT, (requested_at, busy)
        print(f"{IDLE} culled after {culled_after:.0f} s; {BUSY} alive after {pings} pings: {busy}")
