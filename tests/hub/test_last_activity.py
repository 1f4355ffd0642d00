"""Traffic through the proxy becomes the user's ``last_activity`` in the Hub.

The Hub reads activity from ``proxy.get_all_routes()`` (``route["data"]
["last_activity"]``) in ``update_last_activity``, every
``last_activity_interval``; JupyterHub's own suite never checks that path
(its ``test_singleuser_activity`` hides the proxy's activity on purpose).
"""

from datetime import datetime, timedelta, timezone

from dateutil.parser import parse as parse_date
from jupyterhub.tests.utils import api_request, async_requests, public_url

LONG_AGO = datetime(2000, 1, 1)


def _aware(value):
    dt = parse_date(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


async def test_proxied_traffic_sets_last_activity(app, user, disable_check_routes):
    r = await api_request(app, "users", user.name, "server", method="post")
    assert r.status_code == 201, r.text
    spawner = user.spawner
    assert spawner.ready

    # forget the activity of the spawn itself: only the proxy can bring it back
    user.last_activity = LONG_AGO
    spawner.orm_spawner.last_activity = LONG_AGO
    app.db.commit()

    now = datetime.now(timezone.utc)
    # CHP reports milliseconds
    before = now - timedelta(microseconds=now.microsecond % 1000)
    r = await async_requests.get(public_url(app, user) + "activity-probe")
    assert r.status_code == 200
    assert r.text == spawner.server.base_url + "activity-probe"  # the mock server echoes its path

    route = (await app.proxy.get_all_routes())[spawner.proxy_spec]
    assert route["data"]["user"] == user.name
    assert route["data"]["server_name"] == ""
    assert isinstance(route["data"]["last_activity"], str)  # GET /hub/api/proxy json.dumps it
    assert _aware(route["data"]["last_activity"]) >= before

    await app.update_last_activity()
    r = await api_request(app, "users", user.name)
    assert r.status_code == 200
    model = r.json()
    assert _aware(model["last_activity"]) >= before
    assert _aware(model["servers"][""]["last_activity"]) >= before
