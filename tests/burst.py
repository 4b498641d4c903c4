"""Many requests released at once: one thread each, all waiting on one barrier, each timed.

The server's burst row: tests/test_server_hardening.py checks that every request is answered in
time, benchmarks/http_bench.py compares the latencies of two server stacks.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence


def all_at_once(requests: Sequence[tuple], send: Callable[..., object]) -> list[tuple[object, float]]:
    """`send(*request)` for every request at the same moment: [(status, seconds)] in the requests'
    order, the status being what `send` returned, or the name of the OSError it raised."""
    n = len(requests)
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        try:
            status = send(*requests[i])
        except OSError as exc:
            status = type(exc).__name__
        results[i] = (status, time.perf_counter() - t0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
