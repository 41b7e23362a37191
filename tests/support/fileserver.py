"""A local HTTP server for test images, on 127.0.0.2 (Linux routes all of 127/8 to lo): the
agents under test allow that address only, so 127.0.0.1 stays refused as in production.
`?slow=SECONDS` spreads a file over that long; `?to=URL` redirects there; `?hops=N`
redirects to the same path N times (relative redirects) before serving it."""

from __future__ import annotations

import threading
import time
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.2"


class FileServer:
    def __init__(self, root: Path, host: str = HOST) -> None:
        self.root = root
        self.host = host
        # The Authorization header of every request, if any: credentials must not leak.
        self.authorizations: list[str | None] = []
        authorizations = self.authorizations
        server_root = str(root)

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=server_root, **kw)

            def log_message(self, *args):
                pass

            def do_GET(self):
                authorizations.append(self.headers.get("Authorization"))
                parsed = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(parsed.query)
                hops = int(query.get("hops", ["0"])[0])
                if "to" in query or hops:
                    self.send_response(302)
                    self.send_header("Location", query["to"][0] if "to" in query
                                     else f"{parsed.path}?hops={hops - 1}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                slow = query.get("slow")
                if not slow:
                    return super().do_GET()
                path = Path(server_root) / parsed.path.lstrip("/")
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                pieces = 50
                step = max(1, len(data) // pieces)
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(float(slow[0]) / pieces)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
