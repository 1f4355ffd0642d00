"""The data path on its own thread: lifecycle, errors on that thread, and the other modes.

Every other test file runs the proxy as a Hub does by default, on a thread
and event loop of its own (uvloop where installed), driven from the test's
loop as from the Hub's. This file checks what is particular to the thread,
and runs the data-path test modules again in the other two modes: on the
caller's loop (``thread = False``) and on a thread with asyncio's own loop.
"""

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from attack_helpers import address_of_proxy, get

HERE = os.path.dirname(os.path.abspath(__file__))
#: seconds to wait for a record the proxy thread logs
LOG_WAIT = 5
POLL_INTERVAL = 0.01


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def hub_log():
    """A logger standing for the Hub's, with the records it got."""
    log = logging.getLogger(f"test-hub-{id(object())}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = Records()
    log.addHandler(handler)
    log.records = handler.records
    yield log
    log.removeHandler(handler)


def proxy_threads():
    return [thread for thread in threading.enumerate() if thread.name == "inprocess-proxy"]


async def served(proxy):
    responses, problem, _ = await get(address_of_proxy(proxy), b"/user/x")
    return problem is None and [r.status for r in responses] == [200]


async def logged(log, text):
    deadline = time.monotonic() + LOG_WAIT
    while not any(text in record.getMessage() for record in log.records):
        assert time.monotonic() < deadline, f"nothing logged with {text!r}: {[r.getMessage() for r in log.records]}"
        await asyncio.sleep(POLL_INTERVAL)
    return next(record for record in log.records if text in record.getMessage())


@pytest.mark.parametrize("raised", [ZeroDivisionError, SystemExit])
@pytest.mark.gen_test(timeout=20)
async def test_an_error_on_the_proxy_thread_is_logged_and_it_keeps_serving(make_proxy, backend, hub_log, raised):
    proxy = await make_proxy(log=hub_log)
    await proxy.add_route("/", backend.url, {})
    assert await served(proxy)

    def fail():
        raise raised("injected on the proxy thread")

    proxy.plane.loop_thread.loop.call_soon_threadsafe(fail)
    record = await logged(hub_log, "Error on the proxy thread")
    assert record.exc_info[0] is raised
    assert await served(proxy)
    await proxy.add_route("/user/", backend.url, {})
    assert await served(proxy)


@pytest.mark.gen_test(timeout=20)
async def test_stop_joins_the_thread_and_start_makes_a_new_one(make_proxy, backend):
    before = len(proxy_threads())
    proxy = await make_proxy()
    await proxy.add_route("/", backend.url, {})
    assert len(proxy_threads()) == before + 1
    await proxy.stop()
    assert len(proxy_threads()) == before
    # the table is the Hub thread's again: routes change and list with no thread
    await proxy.add_route("/user/", backend.url, {})
    assert sorted(await proxy.get_all_routes()) == ["/", "/user/"]
    await proxy.start()
    assert len(proxy_threads()) == before + 1
    assert await served(proxy)


@pytest.mark.gen_test(timeout=20)
async def test_a_failed_bind_leaves_no_thread(make_proxy):
    from inprocess_proxy import InProcessProxy

    taken = await make_proxy()
    before = len(proxy_threads())
    proxy = InProcessProxy(public_url=taken.public_url)
    with pytest.raises(OSError, match=taken.public_url.rstrip("/").rsplit(":", 1)[1]):
        await proxy.start()
    assert len(proxy_threads()) == before


@pytest.mark.gen_test(timeout=20)
async def test_switch_interval_is_set_while_running_and_restored(make_proxy, hub_log):
    original = sys.getswitchinterval()
    proxy = await make_proxy(log=hub_log, switch_interval=0.001)
    assert sys.getswitchinterval() == pytest.approx(0.001)
    await logged(hub_log, "thread switch interval")
    await proxy.stop()
    assert sys.getswitchinterval() == original


@pytest.mark.gen_test(timeout=20)
async def test_hub_loop_mode_starts_no_thread_and_leaves_the_switch_interval(make_proxy, backend):
    before = len(proxy_threads())
    original = sys.getswitchinterval()
    proxy = await make_proxy(thread=False)
    await proxy.add_route("/", backend.url, {})
    assert len(proxy_threads()) == before
    assert sys.getswitchinterval() == original
    assert await served(proxy)


def test_unknown_event_loop_is_a_config_error():
    from traitlets import TraitError

    from inprocess_proxy import InProcessProxy

    with pytest.raises(TraitError, match="event_loop"):
        InProcessProxy(event_loop="tokio")


#: the test modules that exercise the data path
DATA_PATH_MODULES = [
    "test_forwarding.py",
    "test_streaming.py",
    "test_websocket.py",
    "test_listener.py",
    "test_errors.py",
    "test_client_abort.py",
    "test_churn.py",
    "test_faults.py",
]
MODES = {
    "hub-loop": '{"thread": false}',
    "thread-asyncio": '{"event_loop": "asyncio"}',
}
#: seconds one mode's run may take (about 3 minutes on 2 cores)
MODE_RUN_TIMEOUT = 900


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_data_path_modules_pass_in_mode(mode):
    env = dict(os.environ, INPROCESS_PROXY_TEST_TRAITS=MODES[mode])
    env.pop("PYTEST_ADDOPTS", None)
    # this checkout's package, not an installed one (the child's cwd is tests/)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(HERE), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DATA_PATH_MODULES]
    run = subprocess.run(command, cwd=HERE, env=env, capture_output=True, text=True, timeout=MODE_RUN_TIMEOUT)
    tail = "\n".join(run.stdout.splitlines()[-30:])
    print(f"\n{mode}: {tail.splitlines()[-1] if tail else run.stderr[-2000:]}")
    assert run.returncode == 0, f"{mode} run failed:\n{tail}\n{run.stderr[-2000:]}"


FREEZE_CHILD = """
import asyncio, gc, json, logging
from inprocess_proxy import InProcessProxy

async def main():
    gc.collect()
    counts = [gc.get_freeze_count()]
    for _ in range(2):
        proxy = InProcessProxy(public_url="http://127.0.0.1:0/")
        await proxy.start()
        counts.append(gc.get_freeze_count())
        await proxy.stop()
    print(json.dumps(counts))

logging.basicConfig(level=logging.INFO)
asyncio.run(main())
"""


def test_freeze_gc_freezes_once_per_process_at_the_first_start_and_says_so():
    """The default, in a process of its own (the test process keeps freeze_gc off)."""
    import json

    run = subprocess.run([sys.executable, "-c", FREEZE_CHILD], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    before, after_first, _ = json.loads(run.stdout)
    assert before == 0 and after_first > 0
    # the count itself drifts as frozen objects are freed; the second start froze nothing
    assert run.stderr.count("gc.freeze()") == 1, run.stderr[-2000:]
