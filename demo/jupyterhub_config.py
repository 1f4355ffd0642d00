"""Demo: JupyterHub serving JupyterLab through InProcessProxy, on this machine only.

Run from the repository root (the README's first command)::

    python3 -m venv .venv-demo && .venv-demo/bin/pip install '.[demo]' && .venv-demo/bin/jupyterhub -f demo/jupyterhub_config.py

No Node.js is needed: the proxy runs inside the Hub's process, and JupyterLab's
wheel ships its built front end.

- Listens on http://127.0.0.1:8000/ (set DEMO_PORT for another port).
- Log in with any user name and the password printed at start-up
  (SharedPasswordAuthenticator; a new random password each start, or set
  DEMO_PASSWORD, 8 characters or more).
- Each user's server runs as the Hub's own user (SimpleLocalProcessSpawner:
  no system accounts, no isolation between users; a demo, not a deployment),
  with its files in demo/.state/home/<name>.
- State (sqlite database, cookie secret) is kept in demo/.state/, next to this
  file; delete that folder to start afresh.
"""

import os
import secrets
import sys
from pathlib import Path

c = get_config()  # noqa: F821

here = Path(__file__).resolve().parent
state = here / ".state"
state.mkdir(mode=0o700, exist_ok=True)
port = int(os.environ.get("DEMO_PORT") or 8000)
url = f"http://127.0.0.1:{port}/"
password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)

# the proxy: inside this process, no configurable-http-proxy (Node.js) needed
c.JupyterHub.proxy_class = "inprocess"
c.JupyterHub.bind_url = url
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")

# any user name, one shared password: no system users needed
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = password
c.Authenticator.allow_all = True

# servers run as this user, with JupyterLab from this same venv (PATH may not include it)
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(state / "home" / "{username}")
c.Spawner.cmd = [os.path.join(sys.prefix, "bin", "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
if os.geteuid() == 0:
    # jupyter_server refuses to run as root unless told; only then is it added
    c.Spawner.args = ["--allow-root"]

print(
    f"""
    ------------------------------------------------------------------
     JupyterHub demo with InProcessProxy (no Node.js)
     open      {url}
     log in    any user name, password: {password}
     stop      Ctrl+C (also stops the users' servers)
    ------------------------------------------------------------------
    """,
    file=sys.stderr,
    flush=True,
)
