"""The agent's aiohttp applications: the protocol API and the loopback debug API."""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from agent import fsops, views
from agent.clones import OverlayTemplates
from agent.config import AgentConfig
from agent.enrolment import AgentTls, is_controller
from agent.executor import Executor
from agent.files import FileStores
from agent.images.check import Inspector
from agent.images.urlpolicy import PolicyResolver, UrlPolicy
from agent.iscsi import build_initiator, build_target_driver
from agent.keys import CONFIG, MAIN, SERVICES, TASKS, TLS
from agent.nfs.mounts import MountTable
from agent.services import AgentServices
from agent.sftp.keyfiles import clear_leftover_keys
from agent.tasks import TaskManager, TaskStore
from agent.tools.libvirt import Libvirt
from agent.tools.qemuimg import QemuImg
from shared.config import parse_listen, secret_file
from shared.http import Handler, error_middleware, error_response
from shared.logs import request_id_middleware

PUBLIC_PATHS = frozenset({"/healthz"})
ENROL_PATHS = frozenset({"/v1/enrol/csr", "/v1/enrol/cert"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only the controller may send commands: once enrolled, the TLS handshake already
    asked for a certificate of the pinned CA, and this checks it names the controller
    (another agent's does not). Before, only enrolment answers."""
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    tls = request.app[TLS]
    if not tls.enrolled:
        if request.path in ENROL_PATHS:
            return await handler(request)
        return error_response(401, "not_enrolled",
                              "this agent is not enrolled yet; the controller enrols it "
                              "with the host's join token")
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    if not is_controller(peer):
        return error_response(401, "unauthorized",
                              "only the controller's certificate may command this agent")
    return await handler(request)


@web.middleware
async def enrol_close_middleware(request: web.Request,
                                 handler: Handler) -> web.StreamResponse:
    """Enrolment connections are not kept, whatever the answer: one opened before
    enrolment carries no client certificate, and must not serve the controller after."""
    response = await handler(request)
    if request.path in ENROL_PATHS:
        response.force_close()
    return response


def create_app(config: AgentConfig, executor: Executor | None = None) -> web.Application:
    os.makedirs(config.state_dir, exist_ok=True)
    app = web.Application(middlewares=[request_id_middleware, enrol_close_middleware,
                                       error_middleware, auth_middleware],
                          client_max_size=1 << 20)
    app[CONFIG] = config
    # Who this agent is, whatever address it answers at: made on first start, then kept.
    agent_id = secret_file(os.path.join(config.state_dir, "agent-id"),
                           lambda: str(uuid.uuid4()))
    app[TLS] = AgentTls(config.tls_dir, config.join_token_path, agent_id)
    executor = executor or Executor()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        clear_leftover_keys(config.state_dir)
        store = TaskStore(os.path.join(config.state_dir, "tasks.sqlite"))
        tasks = app[TASKS] = TaskManager(
            store, functools.partial(fsops.public_message, state_dir=config.state_dir))
        qemu_img = QemuImg(executor, config.qemu_img)
        target_driver = build_target_driver(config, executor)
        if target_driver is not None:
            await target_driver.restore()
        files = FileStores(config.nfs_timeout)
        mounts = MountTable(executor, files, os.path.join(config.state_dir, "mounts.json"))
        policy = url_policy(config)
        lv = Libvirt(config.libvirt_uri, config.libvirt_timeout)  # connects when first used
        connector = aiohttp.TCPConnector(resolver=PolicyResolver(policy))
        async with aiohttp.ClientSession(connector=connector) as http:
            app[SERVICES] = AgentServices(
                config=config, agent_id=agent_id, instance=tasks.instance, executor=executor,
                qemu_img=qemu_img,
                http=http, url_policy=policy,
                inspector=Inspector(qemu_img, files, config.max_virtual_size,
                                    config.max_image_size),
                files=files, mounts=mounts, clones=OverlayTemplates(qemu_img),
                running_tasks=lambda: {task.task_id for task in tasks.running()},
                task_ended=tasks.ended,
                target_driver=target_driver,
                initiator=build_initiator(config, executor, qemu_img),
                libvirt=lv,
            )
            yield
            lv.close()
            await app[TASKS].shutdown()
        files.close()
        store.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_post("/v1/commands/{name}", views.submit_command)
    app.router.add_get("/v1/tasks/{task_id}", views.get_task)
    app.router.add_delete("/v1/tasks/{task_id}", views.cancel_task)
    app.router.add_post("/v1/enrol/csr", views.enrol_csr)
    app.router.add_post("/v1/enrol/cert", views.enrol_cert)
    app.router.add_get("/debug/network", views.debug_network)
    app.router.add_post("/v1/probe", views.probe_storages)
    return app


def url_policy(config: AgentConfig) -> UrlPolicy:
    """The download policy from the settings; this agent's own listeners are refused."""
    listeners = []
    for value in (config.listen, config.debug_listen):
        host, port = parse_listen(value)
        for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP):
            listeners.append((str(info[4][0]).split("%", 1)[0], port))
    return UrlPolicy.build(config.download_allow, config.download_deny, listeners,
                           config.allow_url_credentials)


def create_debug_app(main: web.Application) -> web.Application:
    """Served on a loopback-only listener; shares state with the main app."""
    app = web.Application(middlewares=[error_middleware])
    app[MAIN] = main
    app.router.add_get("/debug/tasks", views.debug_tasks)
    app.router.add_get("/debug/config", views.debug_config)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/debug/network", views.debug_network)
    app.router.add_post("/v1/probe", views.probe_storages)
    return app
