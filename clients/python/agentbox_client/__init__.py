"""agentbox client: run untrusted code in sandboxes on an agentbox server, over its HTTP API.

    from agentbox_client import Sandbox

    with Sandbox.create(limits={"memoryMb": 128, "timeoutMs": 5000}, seed=1) as sb:
        sb.files.write("/data/x.csv", "a,b\\n1,2\\n")
        r = sb.run_code("import csv\\nlen(list(csv.reader(open('/data/x.csv'))))")
        r.value  # "2"

    with Sandbox.create(tier="heavy") as sb:   # a Debian userland (gVisor)
        sb.commands.run("echo hi | tr a-z A-Z", on_stdout=lambda s: print(s, end="")).exit_code  # 0

The server is $AGENTBOX_URL (default http://127.0.0.1:8787); the key is $AGENTBOX_API_KEY.
Standard library only.
"""

from .errors import (
    AbortedError,
    AgentboxError,
    AuthenticationError,
    BadRequestError,
    CapacityError,
    FileSystemError,
    FileSystemQuotaError,
    InvalidOptionsError,
    LimitError,
    MemoryLimitError,
    NotFoundError,
    NotTextError,
    OutputLimitError,
    PortUnreachableError,
    ProtocolError,
    QuotaExceededError,
    ReplayError,
    RequestTimeoutError,
    SandboxClosedError,
    TierUnavailableError,
    TimeoutError,
    WorkerCrashedError,
)
from .sandbox import (
    CommandHandle,
    CommandInfo,
    CommandResult,
    CommandStatus,
    Connection,
    DisplayResult,
    EntryInfo,
    ExposedPort,
    GuestError,
    Limits,
    Mount,
    Network,
    NetworkLogEntry,
    RunResult,
    Sandbox,
    SandboxCommands,
    SandboxFiles,
    SandboxInfo,
    SandboxNetwork,
    SandboxPorts,
    SnapshotInfo,
)

__all__ = [
    "AbortedError",
    "AgentboxError",
    "AuthenticationError",
    "BadRequestError",
    "CapacityError",
    "CommandHandle",
    "CommandInfo",
    "CommandResult",
    "CommandStatus",
    "Connection",
    "DisplayResult",
    "EntryInfo",
    "ExposedPort",
    "FileSystemError",
    "FileSystemQuotaError",
    "GuestError",
    "InvalidOptionsError",
    "LimitError",
    "Limits",
    "MemoryLimitError",
    "Mount",
    "Network",
    "NetworkLogEntry",
    "NotFoundError",
    "NotTextError",
    "OutputLimitError",
    "PortUnreachableError",
    "ProtocolError",
    "QuotaExceededError",
    "ReplayError",
    "RequestTimeoutError",
    "RunResult",
    "Sandbox",
    "SandboxClosedError",
    "SandboxCommands",
    "SandboxFiles",
    "SnapshotInfo",
    "SandboxInfo",
    "SandboxNetwork",
    "SandboxPorts",
    "TierUnavailableError",
    "TimeoutError",
    "WorkerCrashedError",
]
