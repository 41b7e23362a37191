"""Error types with a stable machine code, an HTTP status and an operator-readable message.

Both sides raise these; the API and the agent turn them into `{code, message}` bodies,
and a failed job or task carries the same pair.
"""

from __future__ import annotations

from typing import ClassVar


class StrataError(Exception):
    """Base of every error that is meant to reach an operator."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def to_body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidInput(StrataError, ValueError):
    """Also a ValueError, so pydantic validators can raise it and report it as a field error."""

    status = 400
    default_code = "invalid_input"


class Unauthorized(StrataError):
    status = 401
    default_code = "unauthorized"


class Forbidden(StrataError):
    status = 403
    default_code = "forbidden"


class NotFound(StrataError):
    status = 404
    default_code = "not_found"


class Conflict(StrataError):
    status = 409
    default_code = "conflict"


class InUse(Conflict):
    default_code = "in_use"


class InsufficientCapacity(Conflict):
    default_code = "insufficient_capacity"


class Unsupported(Conflict):
    """A cell of the storage matrix, or a storage type, that no plugin provides."""

    default_code = "unsupported"


class OperationFailed(StrataError):
    """A data-plane step failed: a download, a checksum, a qemu-img call."""

    status = 502
    default_code = "operation_failed"


class ChecksumMismatch(OperationFailed):
    default_code = "checksum_mismatch"


class UnsafeImage(OperationFailed):
    default_code = "unsafe_image"


class Timeout(OperationFailed):
    default_code = "timeout"


class Interrupted(OperationFailed):
    """The agent stopped while the task ran (a restart, or a shutdown whose grace ran
    out): the step can be tried again under a new attempt if its command is idempotent."""

    default_code = "interrupted"


class Cancelled(StrataError):
    status = 409
    default_code = "cancelled"


class AgentUnreachable(OperationFailed):
    default_code = "agent_unreachable"


class AgentShuttingDown(AgentUnreachable):
    """The agent is stopping (SIGTERM): it finishes or interrupts the tasks it runs and
    takes no new one. The controller waits for it as for an unreachable agent."""

    status = 503
    default_code = "agent_shutting_down"


class AgentUntrusted(OperationFailed):
    """The listener at a host's address did not prove it is that host's enrolled agent
    (its TLS handshake, or its enrolment proof, failed): nothing was sent to it, and
    trying again will not help."""

    default_code = "agent_untrusted"


class JoinTokenMissing(Conflict):
    """The agent has no join token yet: the operator has still to put it in place."""

    default_code = "join_token_missing"


class JoinTokenMismatch(Forbidden):
    """The agent's join token is not the one the controller holds for its host."""

    default_code = "join_token_mismatch"


_BY_CODE: dict[str, type[StrataError]] = {}


def _index(cls: type[StrataError]) -> None:
    _BY_CODE.setdefault(cls.default_code, cls)
    for sub in cls.__subclasses__():
        _index(sub)


_index(StrataError)


def from_body(code: str, message: str) -> StrataError:
    """Rebuild an error received over the wire, keeping its class where the code is known."""
    cls = _BY_CODE.get(code, OperationFailed)
    return cls(message, code)
