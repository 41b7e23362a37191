"""Application keys: what the views find on the app."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.services.container import Services

SERVICES = web.AppKey("services", Services)
OPENAPI = web.AppKey("openapi", dict[str, Any])
