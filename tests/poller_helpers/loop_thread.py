"""An asyncio event loop on a thread of its own, for the test servers (Modbus, MC)."""

from __future__ import annotations

import asyncio
import threading
from typing import Awaitable, Callable


def start_loop_thread(name: str, setup: Callable[[], Awaitable[None]], timeout_s: float = 10.0
                      ) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Start a daemon thread running a new event loop: ``setup()`` first (e.g. open the
    listener), then ``run_forever`` until ``loop.stop()``. Returns once ``setup()`` is done;
    raises what ``setup()`` raised, or RuntimeError if it did not finish in ``timeout_s``."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            try:
                await setup()
            except BaseException as e:  # reported to the caller
                errors.append(e)
            finally:
                ready.set()

        loop.run_until_complete(main())
        if not errors:
            loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not ready.wait(timeout_s):
        raise RuntimeError(f"{name} did not start")
    if errors:
        raise errors[0]
    return loop, thread
