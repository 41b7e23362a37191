"""Typed keys of the agent's aiohttp applications: `app` fills them, `views` reads them."""

from __future__ import annotations

from aiohttp import web

from agent.config import AgentConfig
from agent.enrolment import AgentTls
from agent.services import AgentServices
from agent.tasks import TaskManager

CONFIG = web.AppKey("config", AgentConfig)
TLS = web.AppKey("tls", AgentTls)
SERVICES = web.AppKey("services", AgentServices)
TASKS = web.AppKey("tasks", TaskManager)
# The debug app's way to the main app, whose state it shows.
MAIN = web.AppKey("main", web.Application)
