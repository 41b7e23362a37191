"""A small synchronous client of the controller API (standard library only)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from shared.config import ADMIN_TOKEN_FILE


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    """`token`: the API token sent with every call (see `read_token`)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 90) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - base URL is the operator's
            self.base_url + path, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
                raise ApiError(exc.code, err["code"], err["message"]) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(exc.code, "http_error", raw.decode(errors="replace")) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, "unreachable", f"cannot reach the controller at "
                           f"{self.base_url}: {exc.reason}") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def wait_job(self, job_id: str, timeout: float = 3600,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Long-polls the job until it finishes; returns its final record."""
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0, min(30, int(deadline - time.monotonic())))
            job: dict[str, Any] = self.get(f"/v1/jobs/{job_id}?wait={wait}")
            if on_progress:
                on_progress(job)
            if job["state"] in ("succeeded", "failed") or time.monotonic() >= deadline:
                return job


def read_token(token_file: str | None = None) -> str | None:
    """The API token: `$STRATA_TOKEN`, else the file named, else the admin token that
    `./dev start` made in its state directory. Never a command-line argument, which any
    user of the host could read."""
    token = os.environ.get("STRATA_TOKEN")
    if token:
        return token.strip()
    path = token_file or os.path.join(os.environ.get("STRATA_STATE_DIR", "state"),
                                        ADMIN_TOKEN_FILE)
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        if token_file:
            raise
        return None
