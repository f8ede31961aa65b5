"""The clock helpers: a wait of nothing still lets the rest of the service run."""

from __future__ import annotations

import asyncio

from alerter.clock import FakeClock, sleep_or_wake


async def test_a_loop_whose_wait_is_zero_still_lets_other_tasks_and_signals_run() -> None:
    """A rule that keeps something due (the freeze `repeat: 0s` caused) cannot starve the
    event loop: SIGTERM's handler and the other tasks still get their turn."""
    clock = FakeClock()
    wake = asyncio.Event()
    stop = asyncio.Event()
    spins = 0

    async def busy() -> None:
        nonlocal spins
        while not stop.is_set() and spins < 1000:  # bounded: a starving loop fails, not hangs
            spins += 1
            await sleep_or_wake(clock, 0.0, wake)  # always due

    task = asyncio.create_task(busy())
    for _ in range(3):
        await asyncio.sleep(0)  # this task gets its turn: the busy loop yields
    stop.set()
    await asyncio.wait_for(task, 1)
    assert 1 <= spins <= 10
