"""Errors of the agentbox client: one class per error code the server sends.

The names mirror the TypeScript library (``InvalidOptionsError``, ``TimeoutError``, ...); every
error carries the wire ``code``, the HTTP ``status`` and the server's JSON ``body``.
``TimeoutError`` is also a builtins.TimeoutError, so ``except TimeoutError`` works either way.
"""

from __future__ import annotations

import builtins
from typing import Any, Dict, List, Mapping, Optional, Type


class AgentboxError(Exception):
    """Root of every error the client raises for an answer from the server."""

    def __init__(self, message: str, *, code: str = "INTERNAL", status: int = 0, body: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.body: Mapping[str, Any] = body or {}

    @property
    def result(self) -> Optional[Dict[str, Any]]:
        """The output so far of the run or command this error stopped (``stdout``, ``stderr``,
        ``exitCode``, ``limitHit``), when it stopped one: what the guest printed is never lost."""
        r = self.body.get("result")
        return dict(r) if isinstance(r, Mapping) else None


class InvalidOptionsError(AgentboxError):
    """The request failed validation; ``issues`` lists each bad field by dotted path."""

    @property
    def issues(self) -> List[Dict[str, str]]:
        return list(self.body.get("issues", []))


class LimitError(AgentboxError):
    """A limit stopped the run and killed the sandbox's worker; ``limit`` names the option."""

    @property
    def limit(self) -> Optional[str]:
        v = self.body.get("limit")
        return str(v) if v is not None else None

    @property
    def value(self) -> Optional[float]:
        v = self.body.get("value")
        return float(v) if isinstance(v, (int, float)) else None


class TimeoutError(LimitError, builtins.TimeoutError):  # noqa: A001 - mirrors the TypeScript name
    pass


class MemoryLimitError(LimitError):
    pass


class OutputLimitError(LimitError):
    pass


class FileSystemQuotaError(LimitError):
    pass


class FileSystemError(AgentboxError):
    """A file operation failed inside the sandbox; ``errno`` is e.g. ``ENOENT``."""

    @property
    def errno(self) -> Optional[str]:
        v = self.body.get("errno")
        return str(v) if v is not None else None


class SandboxClosedError(AgentboxError):
    pass


class TierUnavailableError(AgentboxError):
    pass


class WorkerCrashedError(AgentboxError):
    pass


class ProtocolError(AgentboxError):
    pass


class AbortedError(AgentboxError):
    pass


class AuthenticationError(AgentboxError):
    """Missing or unknown API key (401)."""


class NotFoundError(AgentboxError):
    """No such sandbox for this key, or no such route (404)."""


class QuotaExceededError(AgentboxError):
    """This key holds as many live sandboxes as its quota allows (429)."""


class CapacityError(AgentboxError):
    """The server is at its global sandbox cap and no slot freed in time (429); retry later."""


class BadRequestError(AgentboxError):
    """Malformed JSON, or a body over the server's size limit."""


class RequestTimeoutError(AgentboxError, builtins.TimeoutError):
    """No answer from the server in time (code ``CLIENT_TIMEOUT``, status 0). The client closed
    the connection, which interrupts a run or command still going on in the server."""


class NotTextError(AgentboxError):
    """``files.read(path)`` found bytes that are not UTF-8 (code ``NOT_TEXT``); read them with
    ``format="bytes"``."""


class ReplayError(AgentboxError):
    """A tier="auto" sandbox could not move to the heavy tier (409): a cell that ran on the nano
    tier failed when replayed there (``body["cell"]`` names the run), or its files could not be
    copied. The sandbox stays on the nano tier, usable."""


class PortUnreachableError(AgentboxError):
    """A request through a port's proxy URL found nothing listening on the port in the sandbox
    (502, code ``PORT_UNREACHABLE``, ``body["port"]``), or the server there closed the connection
    without an answer (``BAD_GATEWAY``). The sandbox lives on."""


_BY_CODE: Dict[str, Type[AgentboxError]] = {
    "INVALID_OPTIONS": InvalidOptionsError,
    "TIMEOUT": TimeoutError,
    "MEMORY_LIMIT": MemoryLimitError,
    "OUTPUT_LIMIT": OutputLimitError,
    "FS_QUOTA": FileSystemQuotaError,
    "FS_ERROR": FileSystemError,
    "SANDBOX_CLOSED": SandboxClosedError,
    "TIER_UNAVAILABLE": TierUnavailableError,
    "WORKER_CRASHED": WorkerCrashedError,
    "PROTOCOL_ERROR": ProtocolError,
    "ABORTED": AbortedError,
    "REPLAY_FAILED": ReplayError,
    "PORT_UNREACHABLE": PortUnreachableError,
    "SAVED_STATE_INVALID": AgentboxError,
    "BAD_GATEWAY": PortUnreachableError,
    "UNAUTHORIZED": AuthenticationError,
    "NOT_FOUND": NotFoundError,
    "QUOTA_EXCEEDED": QuotaExceededError,
    "CAPACITY": CapacityError,
    "INVALID_JSON": BadRequestError,
    "BODY_TOO_LARGE": BadRequestError,
}


def error_from_body(status: int, body: Any) -> AgentboxError:
    """The error class for a server's ``{"error": {...}}`` body (AgentboxError when unknown)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return AgentboxError(f"HTTP {status} without an error body", status=status)
    code = str(err.get("code", "INTERNAL"))
    cls = _BY_CODE.get(code, AgentboxError)
    return cls(str(err.get("message", code)), code=code, status=status, body=err)
