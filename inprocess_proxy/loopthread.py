"""An event loop on a thread of its own, and the one way into it from other threads.

The Hub's event loop runs the Hub: API handlers, spawns, database work. The
data path gets a thread and loop of its own (``InProcessProxy.thread``) so
that a busy Hub does not stall users' traffic. Every object of the data plane
(route table, activity, connections, stats) then belongs to that thread, and
other threads reach them only through ``LoopThread``: ``call`` and ``run``
hand a function or coroutine to the loop and await its result on the
caller's loop, ``call_blocking`` waits for it in a synchronous caller (the
metrics collector). Nothing is locked, and nothing waits on a lock while
bytes move.
"""

import asyncio
import concurrent.futures
import threading

__all__ = ["LoopThread", "loop_factory"]


def loop_factory(kind):
    """A function making a new event loop of ``kind``: "auto", "uvloop" or "asyncio".

    "auto" is uvloop where it is installed, else asyncio's own loop.

    Raises:
        ValueError: for an unknown kind, or "uvloop" when it is not installed.
    """
    if kind not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"unknown event loop {kind!r}: choose auto, uvloop or asyncio")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ValueError("event loop 'uvloop' asked for, but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop
    return asyncio.SelectorEventLoop


def _settle(future, result, error):
    if future.done():
        return  # the caller gave up waiting (cancelled)
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class LoopThread:
    """Run an event loop on a daemon thread until ``stop()``.

    Args:
        name: the thread's name (shown by ``py-spy``, ``top -H``, logs).
        new_loop: makes the loop (see ``loop_factory``).
        log: where errors on the thread are logged: an exception escaping a
            callback is logged and the loop goes on.
    """

    def __init__(self, *, name, new_loop, log):
        self.name = name
        self.new_loop = new_loop
        self.log = log
        self.loop = None
        self._thread = None
        self._stopping = False

    def start(self):
        """Start the thread; returns once its loop is running."""
        running = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(running,), name=self.name, daemon=True)
        self._thread.start()
        running.wait()

    def _run(self, running):
        loop = self.new_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._log_exception)
        self.loop = loop
        loop.call_soon(running.set)
        try:
            while not self._stopping:
                try:
                    loop.run_forever()
                except BaseException:
                    # SystemExit or KeyboardInterrupt raised in a callback: the
                    # Hub decides when the proxy stops, so the loop goes on
                    self.log.exception("Error on the proxy thread %s; it keeps serving", self.name)
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _log_exception(self, loop, context):
        exception = context.get("exception")
        self.log.error(
            "Error on the proxy thread %s: %s",
            self.name,
            context.get("message") or exception,
            exc_info=(type(exception), exception, exception.__traceback__) if exception is not None else None,
        )

    def is_current(self):
        """Whether the caller runs on this thread."""
        return threading.current_thread() is self._thread

    async def call(self, fn, *args):
        """``fn(*args)`` on the thread's loop; its result (or exception) on the caller's."""
        caller = asyncio.get_running_loop()
        future = caller.create_future()

        def run():
            try:
                result = fn(*args)
            except BaseException as e:
                caller.call_soon_threadsafe(_settle, future, None, e)
            else:
                caller.call_soon_threadsafe(_settle, future, result, None)

        self.loop.call_soon_threadsafe(run)
        return await future

    async def run(self, coroutine):
        """Run ``coroutine`` on the thread's loop and await it from the caller's."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def call_blocking(self, fn, *args, timeout):
        """``fn(*args)`` on the thread's loop, waited for by a synchronous caller.

        Raises:
            TimeoutError: if the loop did not run it within ``timeout`` seconds.
        """
        future = concurrent.futures.Future()

        def run():
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:
                    future.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the proxy thread {self.name} did not answer within {timeout:g}s") from None

    def stop(self, timeout):
        """Stop the loop after what was handed to it so far, and join the thread.

        Returns whether the thread ended within ``timeout`` seconds.
        """
        self._stopping = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.log.warning("The proxy thread %s did not stop within %gs", self.name, timeout)
            return False
        return True
