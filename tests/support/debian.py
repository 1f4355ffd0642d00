"""Debian programs the tests run (chromium, redis-server): installed with apt-get when missing.

A test that needs a Debian program calls ``debian_executable(path, package)``.
When ``path`` is missing and the tests run as root, it runs ``apt-get update``
and ``apt-get install -y <package>`` (waiting for another apt run's lock), so a
fresh machine or CI runner gets what it needs from the project's own files.
When not root it raises ``PackageMissing`` with the command to run; the test
decides whether that is a failure or a skip.
"""

import os
import subprocess

import pytest

__all__ = ["PackageMissing", "debian_executable"]

#: seconds for each of ``apt-get update`` and ``apt-get install`` (1-2 minutes
#: for chromium on a new machine here: 115 packages, 113 MB)
APT_TIMEOUT = 600


class PackageMissing(Exception):
    """A program is missing and these tests may not install it (not root)."""


def debian_executable(path, package):
    """``path``, after installing Debian's ``package`` if it is missing (as root only).

    Raises:
        PackageMissing: ``path`` is missing and the tests are not root.
    """
    if os.path.exists(path):
        return path
    if os.geteuid() != 0:
        raise PackageMissing(
            f"{path} is missing and the tests are not root, so they cannot install it.\n"
            f"Install Debian's {package} first: sudo apt-get update && sudo apt-get install -y {package}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # wait for another apt run (e.g. a parallel test session) instead of failing on its lock
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *wait_for_lock, "update", "-q"],
        ["apt-get", *wait_for_lock, "install", "-y", "-q", package],
    ):
        try:
            subprocess.run(
                command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=APT_TIMEOUT, check=True,
            )
        except subprocess.CalledProcessError as e:
            pytest.fail(f"{' '.join(command)} failed ({e.returncode}):\n{e.stdout[-3000:]}\n{e.stderr[-3000:]}")
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(command)} took more than {APT_TIMEOUT} s")
    if not os.path.exists(path):
        pytest.fail(f"apt-get installed {package} but {path} is still missing")
    return path
