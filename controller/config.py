"""Controller settings."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.config import ADMIN_TOKEN_FILE, parse_listen
from shared.protocol.types import AbsPath

DEFAULT_STATE_DIR = "/var/lib/strata/controller"


class ControllerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = "127.0.0.1:8640"
    state_dir: str = DEFAULT_STATE_DIR
    database_url: str | None = Field(
        default=None, description="postgresql://... ; default: SQLite in state_dir")
    join_token_ttl: float = Field(
        default=86400, gt=0,
        description="Seconds a host's join token stays usable (default: 24 hours).")
    local_agent: bool = Field(
        default=True,
        description="Run a strata-agent beside the controller, seeded with a local primary "
                    "storage and a dir image store under state_dir.")
    secret_key_file: str | None = Field(
        default=None, description="Key that seals credentials in the database; default: "
                                  "state_dir/secret.key, made on first start. Back it up.")
    host_check_interval: float = Field(
        default=30, ge=0,
        description="Seconds between health checks of the agents (0: no checks).")
    reconcile_interval: float = Field(
        default=3600, ge=0,
        description="Seconds between reconciles of every ready primary storage (its files "
                    "against the rows; the last report is kept; 0: only on request).")
    cache_gc_interval: float = Field(
        default=600, ge=0,
        description="Seconds between image cache collections on every ready primary "
                    "storage (each storage's watermarks decide what goes; 0: only on "
                    "request).")
    storage_probe_interval: float = Field(
        default=30, ge=0,
        description="Seconds between health probes (a heartbeat file) of each storage from "
                    "each host attached to it (0: no probes).")
    storage_probe_timeout: float = Field(
        default=10, gt=0, le=120,
        description="Seconds a probe may take before the storage counts as unhealthy on "
                    "that host.")
    agent_unreachable_timeout: float = Field(
        default=120, gt=0,
        description="Seconds a job waits for an agent that does not answer before it fails "
                    "with agent_unreachable.")
    step_attempts: int = Field(
        default=3, ge=1,
        description="Attempts a job's agent step gets when the agent is interrupted while "
                    "running it (a restart or shutdown); idempotent commands only.")
    step_retry_delay: float = Field(
        default=2, ge=0,
        description="Seconds before a step's second attempt, doubled for each further one "
                    "(at most 30).")
    lease_ttl: float = Field(
        default=15, gt=0,
        description="Seconds a controller's hold on its running jobs, and on leadership "
                    "(SQLite), lasts unless renewed; once it lapses, another controller on "
                    "the same database takes over. Controllers' clocks must agree (NTP).")
    lease_renew_interval: float = Field(
        default=5, gt=0,
        description="Seconds between renewals of those leases (less than lease_ttl); also "
                    "how often a controller looks for jobs to take over and for cancel "
                    "requests.")
    storage_roots: list[AbsPath] = Field(
        default_factory=lambda: ["/var/lib/strata", "/srv"],
        description="Storage directories must sit below one of these (on embedded "
                    "defaults, the state directory too).")
    local_agent_download_allow: list[str] = Field(
        default_factory=list,
        description="Networks the local agent may download images from (its "
                    "download_allow); loopback is refused unless listed, e.g. 127.0.0.2/32.")
    local_agent_listen: str = "127.0.0.1:8641"
    local_agent_debug_listen: str = "127.0.0.1:8642"

    @field_validator("listen", "local_agent_listen", "local_agent_debug_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @model_validator(mode="after")
    def _leases(self) -> ControllerConfig:
        if self.lease_renew_interval >= self.lease_ttl:
            raise ValueError("lease_renew_interval must be less than lease_ttl")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{os.path.join(self.state_dir, 'strata.sqlite')}"

    @property
    def secret_key_path(self) -> str:
        return self.secret_key_file or os.path.join(self.state_dir, "secret.key")

    @property
    def admin_token_path(self) -> str:
        """Where the first start leaves an admin API token (see `TokenService.bootstrap`)."""
        return os.path.join(self.state_dir, ADMIN_TOKEN_FILE)

    @property
    def instance_path(self) -> str:
        """The instance id of the controller running on this state directory."""
        return os.path.join(self.state_dir, "instance")

    @property
    def tls_dir(self) -> str:
        """The controller's client credential for the agent channel, issued at each start."""
        return os.path.join(self.state_dir, "tls")

    @property
    def local_agent_state_dir(self) -> str:
        return os.path.join(self.state_dir, "agent")
