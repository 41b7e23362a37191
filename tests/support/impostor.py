"""Listeners that pretend to be an agent, on loopback, recording every byte they get
(decrypted, for a TLS one) so tests can show they learned nothing."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

from shared import pki

# What a TLS impostor answers to any request: an agent-shaped JSON body.
_BODY = b'{"agent_id": "x", "csr_pem": "not a csr", "mac": "00000000"}'
FAKE_CSR = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY))
NOT_TLS = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"


class Impostor:
    """Listens on 127.0.0.1 (`port`, or any free one). With `credential` (a PEM file
    holding a key and a certificate; a self-signed one is made if it is None) it speaks
    TLS; with `tls=False` it is a plain TCP listener."""

    def __init__(self, work: Path, *, port: int = 0, tls: bool = True,
                 credential: Path | None = None) -> None:
        self.received = bytearray()
        self.connections = 0
        self._context: ssl.SSLContext | None = None
        if tls:
            if credential is None:
                pair = pki.self_signed("impostor", 1)
                credential = work / "impostor.pem"
                pki.write_private(str(credential), pair.key_pem + pair.cert_pem)
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(str(credential))
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        conn.settimeout(5)
        try:
            if self._context is not None:
                conn = self._context.wrap_socket(conn, server_side=True)
            data = conn.recv(65536)
            with self._lock:
                self.received += data
            if data:
                conn.sendall(FAKE_CSR if self._context is not None else NOT_TLS)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        self._sock.close()
        self._thread.join(5)
