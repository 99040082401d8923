"""Background loops end when cancelled, even when something inside swallowed the cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from service.lib.tasks import stop_if_cancelled


async def test_a_loop_whose_cancellation_was_swallowed_still_ends_at_its_next_step() -> None:
    async def loop() -> None:
        while True:
            stop_if_cancelled()
            with contextlib.suppress(asyncio.CancelledError):  # what an interrupted call's clean-up can amount to
                await asyncio.sleep(0.05)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


async def test_a_task_not_cancelled_goes_on() -> None:
    stop_if_cancelled()  # no exception
