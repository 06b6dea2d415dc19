"""Small servers on 127.0.0.1 that are not Dask schedulers: they count who connects, answer as
an HTTP server would, or reply garbage. Each runs in a daemon thread and stops itself after
``lifetime`` seconds (closing what it accepted), so a client that hangs on one is freed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIFETIME_S = 30.0


@dataclass
class Listener:
    """A server's address and how many connections it accepted."""

    port: int
    accepted: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


@contextlib.contextmanager
def raw_server(reply: bytes = b"", lifetime: float = LIFETIME_S) -> Iterator[Listener]:
    """A TCP server that sends ``reply`` to each connection (nothing when empty) and keeps it
    open, silent, until it stops."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    listener = Listener(server.getsockname()[1])
    accepted: list[socket.socket] = []

    def serve() -> None:
        ends = time.monotonic() + lifetime
        while not listener.stop.is_set() and time.monotonic() < ends:
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            listener.accepted += 1
            accepted.append(connection)
            if reply:
                with contextlib.suppress(OSError):
                    connection.sendall(reply)
        for connection in accepted:
            connection.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        listener.stop.set()
        thread.join(5)


class _Page(BaseHTTPRequestHandler):
    timeout = LIFETIME_S  # a connection that sends no request is dropped, not held forever

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = b"<html>dashboard</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(lifetime: float = LIFETIME_S) -> Iterator[Listener]:
    """An HTTP server like a Dask dashboard: it waits for a request and answers it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    server.daemon_threads = True
    server.timeout = lifetime
    listener = Listener(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    timer = threading.Timer(lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield listener
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)
