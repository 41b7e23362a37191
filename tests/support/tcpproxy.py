"""A loopback TCP proxy that a test controls: it forwards to a loopback port and cuts
connections mid-transfer when told, to show that a client survives (or cleans up after)
a dropped connection."""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["up", "down"]  # up: client to server; down: server to client


@dataclass
class _Rule:
    direction: Direction
    nbytes: int
    times: int
    carried: dict[int, int] = field(default_factory=dict)


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.cuts = 0
        self._rule: _Rule | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, nbytes: int, direction: Direction, times: int = 1) -> None:
        """From now, the next `times` connections that carry more than `nbytes` bytes in
        `direction` are cut there (reset, as by a failing network)."""
        with self._lock:
            self._rule = _Rule(direction, nbytes, times)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _reset(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            conn = next(self._ids)
            with self._lock:
                self._sockets += [client, server]
            for src, dst, direction in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(conn, src, dst, direction),
                                 daemon=True).start()

    def _pump(self, conn: int, src: socket.socket, dst: socket.socket,
              direction: Direction) -> None:
        try:
            while data := src.recv(1 << 16):
                allowed = self._allowance(conn, direction, len(data))
                dst.sendall(data[:allowed])
                if allowed < len(data):
                    _reset(src)
                    _reset(dst)
                    return
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(dst)

    def _allowance(self, conn: int, direction: Direction, size: int) -> int:
        """How many of `size` bytes may pass before the rule cuts this connection."""
        with self._lock:
            rule = self._rule
            if rule is None or rule.direction != direction or rule.times <= 0:
                return size
            before = rule.carried.get(conn, 0)
            rule.carried[conn] = before + size
            if before + size <= rule.nbytes:
                return size
            rule.times -= 1
            self.cuts += 1
            return rule.nbytes - before


def _reset(sock: socket.socket) -> None:
    """Ends the connection at once, with a reset where the kernel still can (linger 0).
    Shutting down first wakes the other pump's blocked `recv`: a bare close would not."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
