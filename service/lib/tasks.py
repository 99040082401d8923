"""Background loops that outlive errors must still end when their task is cancelled.

A cancellation that lands in a database or Redis call can come out as another
exception: the client's clean-up of the interrupted call fails, and its error
replaces the ``CancelledError``. A loop that catches that error to try again
would then swallow the cancellation and go on, and the service's shutdown,
which waits for its background tasks, would wait for ever. Every such loop
calls ``stop_if_cancelled`` first in its ``except`` blocks.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` when the current task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
