"""The timerfd timer: fires at its deadline (not up to 1 ms late like call_at), re-arms."""

from __future__ import annotations

import asyncio

from lvsmon.ha.timer import PreciseTimer


def test_fires_precisely_rearms_and_cancels() -> None:
    async def main() -> tuple[list[tuple[float, float]], bool]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[float, float]] = []
        timer = PreciseTimer(loop, lambda d: fired.append((d, loop.time())))
        for _ in range(20):
            deadline = loop.time() + 0.0037
            timer.arm(deadline)
            await asyncio.sleep(0.006)
        timer.arm(loop.time() + 0.05)
        timer.arm(loop.time() + 0.002)  # re-arming replaces the earlier deadline
        await asyncio.sleep(0.08)
        timer.arm(loop.time() + 0.002)
        timer.cancel()
        await asyncio.sleep(0.01)
        timer.close()
        timer.close()  # idempotent
        return fired, len(fired) == 21

    fired, count_ok = asyncio.run(main())
    assert count_ok
    lateness = sorted(at - deadline for deadline, at in fired)
    assert lateness[0] >= 0
    assert lateness[len(lateness) // 2] < 0.0005  # median well under call_at's ~1 ms
