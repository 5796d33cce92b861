"""When probes start and when they time out: FIFO lanes instead of one heap. Pure.

Every run of a probe is due one interval after the previous one was due, and
times out `timeout` after it started. Runs start in the order they were due,
so the times made with one interval (or one timeout) come in order: a deque
per distinct value is already sorted. Adding is an append and taking a due
entry a popleft, where a heap of 10k entries cost a push, a pop and ~14 list
comparisons apiece (plus a GC-tracked list per entry). Entries that are not
in order (jittered first runs, runs re-anchored after a late start) go on a
small heap beside the lanes.

Entries are never cancelled: the owner skips an item that is no longer due
when it comes out (the engine checks the probe's own state).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Timeline(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()  # ties on the heap never compare items
        # lane -> (times, items): parallel deques, so an entry allocates no tuple
        self._lanes: dict[float, tuple[deque[float], deque[T]]] = {}

    def add(self, item: T, when: float, lane: float | None = None) -> None:
        """`item` is due at `when`. Entries of one `lane` should come in time order;
        one that does not (or has no lane) goes on the heap, so order is never lost."""
        if lane is not None:
            queues = self._lanes.get(lane)
            if queues is None:
                queues = self._lanes[lane] = (deque(), deque())
            times, items = queues
            if not times or times[-1] <= when:
                times.append(when)
                items.append(item)
                return
        heapq.heappush(self._heap, (when, next(self._seq), item))

    def pop_due(self, now: float) -> list[T]:
        """Every item due at or before `now`, each once (heap first, then lane by lane)."""
        out: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        empty = []
        for lane, (times, items) in self._lanes.items():
            while times and times[0] <= now:
                times.popleft()
                out.append(items.popleft())
            if not times:
                empty.append(lane)
        for lane in empty:  # a reload may leave an interval nobody uses any more
            del self._lanes[lane]
        return out

    def next_time(self) -> float:
        """When the first entry is due; inf when there is none."""
        first = self._heap[0][0] if self._heap else math.inf
        for times, _ in self._lanes.values():
            if times[0] < first:
                first = times[0]
        return first

    def clear(self) -> None:
        self._heap.clear()
        self._lanes.clear()

    def __len__(self) -> int:
        return len(self._heap) + sum(len(times) for times, _ in self._lanes.values())
