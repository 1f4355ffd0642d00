"""A real JupyterHub with InProcessProxy, single-user servers and an admin token, for end-to-end tests.

``RealHub`` is a ``support.hub.HubProcess`` (free 127.0.0.1 ports, generated
``jupyterhub_config.py``, everything it started killed at ``stop()``) whose
configuration adds what the end-to-end tests share: SharedPasswordAuthenticator
with ``self.password`` (any user name), SimpleLocalProcessSpawner running this
venv's ``jupyterhub-singleuser`` with JupyterLab as default URL and home
directories under the scratch directory, and an admin service whose token
(``self.token``) the test uses for the REST API.

Nothing here imports ``inprocess_proxy``: the Hub loads it by its entry point
name, as a user's configuration would.
"""

import contextlib
import os
import secrets
import sys
import textwrap
from pathlib import Path

import requests

from support.hub import HubProcess
from support.processes import wait_until

__all__ = ["RealHub"]

#: seconds a single-user server gets to start (JupyterLab imports take 3-8 s)
SERVER_START_TIMEOUT = 120


class RealHub(HubProcess):
    """One JupyterHub process with InProcessProxy, users' servers and an admin token.

    Args:
        directory: scratch directory for the config, the sqlite db, the cookie
            secret, the Hub's log and the users' home directories
            (``home/<name>``).
        config: extra configuration lines appended to the generated base, for
            what one test needs (e.g. services, intervals).
    """

    def __init__(self, directory, *, config=""):
        self.password = secrets.token_urlsafe(12)
        self.token = secrets.token_hex(32)
        directory = Path(directory)
        super().__init__(directory, config=self._users_config(directory) + textwrap.dedent(config))

    def home(self, username):
        """A user's home directory (the single-user server's root directory)."""
        return self.directory / "home" / username

    def _users_config(self, directory):
        singleuser = os.path.join(sys.prefix, "bin", "jupyterhub-singleuser")
        args = [
            # no outbound fetches from JupyterLab during tests (news feed, update check)
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            args.append("--allow-root")
        return textwrap.dedent(
            f"""\
            # tests/realhub.py: users, their servers, an admin service
            c.JupyterHub.log_level = "DEBUG"
            # Never wait for a spawn inside the request that asked for it: the
            # browser always gets the spawn-pending page with its progress
            # stream, and POST /users/<name>/server answers 202 at once instead
            # of after up to 10 s, so several spawns run together.
            c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}

            c.JupyterHub.authenticator_class = "shared-password"
            c.SharedPasswordAuthenticator.user_password = {self.password!r}
            c.Authenticator.allow_all = True

            c.JupyterHub.spawner_class = "simple"
            c.SimpleLocalProcessSpawner.home_dir_template = {str(directory / "home" / "{username}")!r}
            c.Spawner.cmd = [{singleuser!r}]
            c.Spawner.args = {args!r}
            c.Spawner.default_url = "/lab"
            c.Spawner.start_timeout = {SERVER_START_TIMEOUT}
            c.Spawner.http_timeout = {SERVER_START_TIMEOUT}

            c.JupyterHub.services = [{{"name": "realhub-admin", "api_token": {self.token!r}}}]
            c.JupyterHub.load_roles = [
                {{
                    "name": "realhub-admin",
                    "scopes": ["admin:users", "admin:servers", "access:servers", "proxy"],
                    "services": ["realhub-admin"],
                }}
            ]
            """
        )

    def api(self, method, path, **kwargs):
        """A Hub REST API request (``path`` after ``/hub/api``) with the admin token, through the proxy."""
        kwargs.setdefault("timeout", 30)
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.public_url}/hub/api{path}", headers=headers, **kwargs)

    def server_state(self, username):
        """The user's default server model from the REST API, or None if it is not running."""
        response = self.api("GET", f"/users/{username}")
        response.raise_for_status()
        return response.json()["servers"].get("")

    def start_servers(self, *usernames, wait=True, timeout=SERVER_START_TIMEOUT):
        """Create the users if needed and start their default servers together.

        Args:
            wait: wait until every server is ready (the REST API says so).
        """
        for username in usernames:
            if self.api("GET", f"/users/{username}").status_code == 404:
                self.api("POST", f"/users/{username}").raise_for_status()
            response = self.api("POST", f"/users/{username}/server")
            if response.status_code not in (201, 202):
                raise RuntimeError(f"starting {username}'s server: {response.status_code} {response.text}")
        if not wait:
            return
        for username in usernames:
            wait_until(
                lambda username=username: (self.server_state(username) or {}).get("ready"),
                timeout=timeout,
                what=f"{username}'s server ready",
                interval=0.25,
            )

    @contextlib.contextmanager
    def log_shown_on_failure(self, lines=80):
        """Print the tail of the Hub's log if the block raises (pytest shows it with the failure)."""
        try:
            yield
        except BaseException:
            print(f"JupyterHub log (tail):\n{self.log_tail(lines)}")
            raise
