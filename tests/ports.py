"""Free TCP ports for test servers, chosen below Linux's ephemeral range, and the wait for a
server started on one to answer.

Binding port 0 hands out an ephemeral port (32768-60999) that the kernel may give to the next
outgoing or wildcard socket before the server binds it; torch's gloo and TCPStore take such
ports too, which once made a server test fail with "Address already in use". Ports drawn at
random from 20000-32767 and checked free are not handed out by the kernel on its own.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from typing import Callable


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now and the kernel does not allocate itself."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32767")


def wait_answering(proc: subprocess.Popen, probe: Callable[[], object], timeout: float, interval: float) -> bool:
    """Call `probe()` until it returns without raising (the server answers): True; False once `proc`
    has exited or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return True
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(interval)
