"""Serving the API: the listening socket, the exposure rule on the address it is bound to, and
uvicorn in a thread of its own (rank 0's main thread runs the worker loop).

uvicorn closes a keep-alive connection idle after a response, but lets a connection that never
finishes its request headers (idle from the start, or a slow-loris trickling bytes) live for
ever. `_Protocol` gives every request's headers a deadline; with no thread per connection, such
sockets then cost a little memory for a few seconds and never a slot that /healthz or an
authenticated request needs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import threading

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wan22ctl.errors import UserError

log = logging.getLogger("wan22ctl.server")

HEADER_TIMEOUT_S = 10.0  # from connect (or the previous response) to a request's complete headers
KEEP_ALIVE_S = 5.0
BACKLOG = 2048  # accept queue (the kernel caps it at net.core.somaxconn); bursts wait here, not reset


def _address_info(host: str, port: int):
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def resolve(host: str, port: int = 0) -> str:
    """The address `bind(host, port)` binds to (a name resolved as the OS resolves it)."""
    return _address_info(host, port)[4][0]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port`."""
    family, kind, proto, _, address = _address_info(host, port)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def check_exposure(address: str, api_key: str | None) -> None:
    """Refuse to serve without an API key on an address reachable from beyond this machine:
    anything but loopback, the wildcard included (in a container: every container on its network)."""
    if api_key is None and not ipaddress.ip_address(address.split("%")[0]).is_loopback:
        raise UserError(f"the server would listen on {address}, reachable beyond this machine, without an API key",
                        fix="set WAN22_API_KEY or --api-key-file (clients send Authorization: Bearer KEY), "
                            "or listen on 127.0.0.1")


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers."""

    header_timeout = HEADER_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers (a slow-loris after one real request)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser rejects (a malformed request line or header, a method it does
        not know) gets the API's JSON error shape too."""
        body = json.dumps({"error": {"message": f"malformed HTTP request: {msg}", "type": "invalid_request_error",
                                     "param": None, "code": None}}).encode()
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


class Listener:
    """uvicorn serving `app` on `sock` in a daemon thread; `stop()` ends it."""

    def __init__(self, app, changes, sock: socket.socket, header_timeout: float = HEADER_TIMEOUT_S):
        protocol = type("Protocol", (_Protocol,), {"header_timeout": header_timeout})
        config = uvicorn.Config(app, http=protocol, loop=_loop(), lifespan="off", access_log=False,
                                log_level="warning", timeout_keep_alive=int(KEEP_ALIVE_S), backlog=BACKLOG,
                                timeout_graceful_shutdown=2, server_header=False, date_header=True)
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.changes = changes
        self.address = sock.getsockname()[:2]
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._serve()) if _loop() == "asyncio" else _uvloop_run(self._serve())

    async def _serve(self) -> None:
        self.changes.attach(asyncio.get_running_loop())
        await self.server.serve(sockets=[self.sock])

    def start(self) -> "Listener":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=5)


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _uvloop_run(coro):
    import uvloop

    return uvloop.run(coro)
