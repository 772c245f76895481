"""The Sandbox class: the TypeScript API (create, run_code, files, commands, network, kill) over the HTTP API.

Standard library only: ``http.client`` for requests, a small Server-Sent Events reader for
streamed runs. One connection per request keeps the client thread-safe and simple.
"""

from __future__ import annotations

import base64
import builtins
import http.client
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple, TypedDict, Union, cast, overload

from .errors import AgentboxError, NotTextError, RequestTimeoutError, error_from_body

DEFAULT_URL = "http://127.0.0.1:8787"

#: A run or command waits for the server this long past its own time limit (the server's grace
#: period, a queue behind other requests on the sandbox, the trip back) before the client gives up.
RUN_TIMEOUT_MARGIN_S = 30.0


class Limits(TypedDict, total=False):
    """Per-sandbox limits; units are in the names, as in the TypeScript API."""

    memoryMb: int
    timeoutMs: int
    graceMs: int
    outputBytes: int
    vfsBytes: int
    vfsFiles: int
    cpus: float  # heavy tier: CPU time per wall-clock time
    diskMb: int  # heavy tier: size of /home/user and /tmp


class Mount(TypedDict, total=False):
    hostPath: str
    guestPath: str
    readOnly: bool


class NetworkSecret(TypedDict):
    """A credential the guest uses without holding it: the guest's env var ``name`` holds a
    placeholder; the host sends ``value`` in its place (header values, query string) only to URLs
    that ``hosts`` entries match. The server never echoes ``value``."""

    name: str
    value: str
    hosts: List[str]


class Network(TypedDict, total=False):
    """A JavaScript sandbox's network grant (``fetch`` through the host), as in the TypeScript API.

    ``allow`` (required) and ``deny`` hold ``[http(s)://]host[:port]`` entries; a host matching a
    ``deny`` entry is refused whatever ``allow`` says (a deny entry without a port covers every
    port). The server lets a key ask only for hosts within its grant (the key's ``allowNet``, else
    ``--allow-net``)."""

    allow: List[str]
    deny: List[str]
    timeoutMs: int
    maxRequestBytes: int
    maxResponseBytes: int
    maxConcurrent: int
    maxRedirects: int
    secrets: List["NetworkSecret"]


@dataclass(frozen=True)
class NetworkLogEntry:
    """One attempt by the guest to reach the network: a request, or one redirect hop of it.

    ``decision`` is "allowed" (a connection was attempted; ``status`` or ``error`` says how it
    went), "denied" (the grant, a deny entry or a cap refused it; nothing was sent) or "error" (no
    connection was attempted, e.g. the name did not resolve); ``reason`` says why. ``url`` has no
    query string or credentials; no headers or bodies are kept."""

    time: str
    method: str
    url: str
    host: str
    port: Optional[int]
    address: Optional[str]
    hop: int
    decision: Literal["allowed", "denied", "error"]
    reason: str
    status: Optional[int]
    bytes_sent: int
    bytes_received: int
    duration_ms: float
    error: Optional[str] = None

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "NetworkLogEntry":
        return NetworkLogEntry(
            time=str(d["time"]),
            method=str(d["method"]),
            url=str(d["url"]),
            host=str(d["host"]),
            port=None if d.get("port") is None else int(d["port"]),
            address=None if d.get("address") is None else str(d["address"]),
            hop=int(d["hop"]),
            decision=d["decision"],
            reason=str(d["reason"]),
            status=None if d.get("status") is None else int(d["status"]),
            bytes_sent=int(d["bytesSent"]),
            bytes_received=int(d["bytesReceived"]),
            duration_ms=float(d["durationMs"]),
            error=None if d.get("error") is None else str(d["error"]),
        )


@dataclass(frozen=True)
class GuestError:
    """The guest's exception: part of a result, not a raised error."""

    name: str
    message: str
    traceback: str


@dataclass(frozen=True)
class DisplayResult:
    """One rich result (a Jupyter-style MIME bundle): a ``display()`` call in the sandbox, or the
    final expression's rich form (``main``). ``data`` maps MIME type to text (binary types base64);
    the properties decode the common ones, None when the bundle lacks that type."""

    data: Mapping[str, str]
    main: bool = False

    def _binary(self, mime: str) -> Optional[bytes]:
        v = self.data.get(mime)
        return base64.b64decode(v) if v is not None else None

    @property
    def text(self) -> Optional[str]:
        return self.data.get("text/plain")

    @property
    def html(self) -> Optional[str]:
        return self.data.get("text/html")

    @property
    def markdown(self) -> Optional[str]:
        return self.data.get("text/markdown")

    @property
    def svg(self) -> Optional[str]:
        return self.data.get("image/svg+xml")

    @property
    def json(self) -> Any:
        v = self.data.get("application/json")
        return json.loads(v) if v is not None else None

    @property
    def png(self) -> Optional[bytes]:
        return self._binary("image/png")

    @property
    def jpeg(self) -> Optional[bytes]:
        return self._binary("image/jpeg")

    @property
    def pdf(self) -> Optional[bytes]:
        return self._binary("application/pdf")

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "DisplayResult":
        data = d.get("data")
        return DisplayResult(data={str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}, main=d.get("main") is True)


@dataclass(frozen=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    vfs_digest: str
    seed: int
    value: Optional[str] = None
    error: Optional[GuestError] = None
    limit_hit: Optional[str] = None
    #: Rich results in the order they happened (empty when the run displayed nothing rich).
    results: Tuple[DisplayResult, ...] = ()
    #: The tier that ran it: "nano" or "heavy" (a tier="auto" sandbox moves to "heavy" when code needs it).
    tier: Optional[str] = None

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "RunResult":
        e = d.get("error")
        return RunResult(
            stdout=str(d["stdout"]),
            stderr=str(d["stderr"]),
            exit_code=int(d["exitCode"]),
            duration_ms=float(d["durationMs"]),
            vfs_digest=str(d["vfsDigest"]),
            seed=int(d["seed"]),
            value=d.get("value"),
            error=GuestError(str(e["name"]), str(e["message"]), str(e["traceback"])) if isinstance(e, dict) else None,
            limit_hit=d.get("limitHit"),
            results=tuple(DisplayResult.from_json(x) for x in d.get("results") or () if isinstance(x, dict)),
            tier=str(d["tier"]) if isinstance(d.get("tier"), str) else None,
        )


@dataclass(frozen=True)
class CommandResult:
    """What ``commands.run`` returns. ``limit_hit`` ("timeoutMs", "outputBytes", "memoryMb") means a limit
    killed the command (exit code 137, SIGKILL) and the output is what it wrote before; the
    sandbox lives on."""

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float
    signal: Optional[str] = None
    limit_hit: Optional[str] = None

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "CommandResult":
        return CommandResult(
            exit_code=int(d["exitCode"]),
            stdout=str(d["stdout"]),
            stderr=str(d["stderr"]),
            duration_ms=float(d["durationMs"]),
            signal=d.get("signal"),
            limit_hit=d.get("limitHit"),
        )


@dataclass(frozen=True)
class CommandInfo:
    """A background command still running, as ``commands.list()`` gives it. ``pid`` is its
    process id in the guest; ``cmd`` the command as given (an argv joined by spaces)."""

    pid: int
    cmd: str
    argv: List[str]
    cwd: str
    started_at: str

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "CommandInfo":
        return CommandInfo(int(d["pid"]), str(d["cmd"]), [str(a) for a in d["argv"]], str(d["cwd"]), str(d["startedAt"]))


@dataclass(frozen=True)
class CommandStatus:
    """A background command's state: ``status`` is "running" (output so far), "exited" (its
    result) or "failed" (the sandbox ended under it: ``error`` says why)."""

    status: Literal["running", "exited", "failed"]
    stdout: str
    stderr: str
    exit_code: Optional[int] = None
    signal: Optional[str] = None
    limit_hit: Optional[str] = None
    error: Optional[str] = None

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "CommandStatus":
        code = d.get("exitCode")
        return CommandStatus(d["status"], str(d["stdout"]), str(d["stderr"]), None if code is None else int(code), d.get("signal"), d.get("limitHit"), d.get("error"))


class CommandHandle:
    """A command started with ``commands.run(cmd, background=True)`` (heavy tier): it runs in the
    sandbox while other calls proceed, until it ends, is killed, or the sandbox ends."""

    def __init__(self, sandbox: "Sandbox", info: CommandInfo) -> None:
        self._sb = sandbox
        self.info = info
        self.pid = info.pid

    @property
    def _path(self) -> str:
        return f"{self._sb._base}/commands/{self.pid}"

    def status(self) -> CommandStatus:
        """Whether it still runs, with its output so far (or its result)."""
        return CommandStatus.from_json(self._sb._conn.json("GET", self._path))

    @property
    def stdout(self) -> str:
        """What it has written to stdout so far (asks the server)."""
        return self.status().stdout

    @property
    def stderr(self) -> str:
        return self.status().stderr

    def wait(self, timeout_s: Optional[float] = None) -> CommandResult:
        """Wait for it to end and return its result, as a foreground ``commands.run`` would.

        ``timeout_s`` bounds the wait (RequestTimeoutError past it; the command runs on);
        None waits as long as it runs. Raises SandboxClosedError when the sandbox ends first."""
        return CommandResult.from_json(self._sb._conn.json("GET", f"{self._path}/wait", timeout_s=timeout_s if timeout_s is not None else 365 * 86400.0))

    def kill(self, signal: Literal["KILL", "TERM", "INT"] = "KILL") -> bool:
        """Signal its process group (SIGKILL by default, then wait for it to end). False when it had already ended."""
        return bool(self._sb._conn.json("POST", f"{self._path}/kill", {"signal": signal})["killed"])

    def __repr__(self) -> str:
        return f"<CommandHandle pid={self.pid} {self.info.cmd!r}>"


@dataclass(frozen=True)
class EntryInfo:
    name: str
    path: str
    type: Literal["file", "dir", "symlink"]
    size: int


@dataclass(frozen=True)
class SandboxInfo:
    id: str
    tier: str
    language: str
    limits: Limits  # every limit of the sandbox's tier; cpus (heavy) is a float, the rest ints
    seed: int
    status: Literal["running", "paused", "closed"]
    created_at: str
    last_active_at: str
    idle_timeout_ms: int
    expires_at: str
    #: tier="auto" only: the tier it runs on now ("nano", or "heavy" once code needed it).
    current: Optional[str] = None
    #: cluster mode only: the node that holds the sandbox (any node answers for it).
    node: Optional[str] = None

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "SandboxInfo":
        return SandboxInfo(
            id=str(d["id"]),
            tier=str(d["tier"]),
            language=str(d["language"]),
            limits=_limits_from_json(d["limits"]),
            seed=int(d["seed"]),
            status=d["status"],
            created_at=str(d["createdAt"]),
            last_active_at=str(d["lastActiveAt"]),
            idle_timeout_ms=int(d["idleTimeoutMs"]),
            expires_at=str(d["expiresAt"]),
            current=str(d["current"]) if isinstance(d.get("current"), str) else None,
            node=str(d["node"]) if isinstance(d.get("node"), str) else None,
        )


def _limits_from_json(d: Mapping[str, Any]) -> Limits:
    return cast(Limits, {k: float(v) if k == "cpus" else int(v) for k, v in d.items()})


@contextmanager
def _timeouts(timeout_s: float, what: str) -> Iterator[None]:
    """A socket timeout becomes RequestTimeoutError (the server's own TIMEOUT errors pass through)."""
    try:
        yield
    except builtins.TimeoutError as e:
        if isinstance(e, AgentboxError):
            raise
        raise RequestTimeoutError(f"no answer from the server within {timeout_s:g} s ({what}); the connection was closed, which stops the run in the server", code="CLIENT_TIMEOUT") from e


@dataclass(frozen=True)
class Connection:
    """Where the server is and which key to use. Defaults: $AGENTBOX_URL, $AGENTBOX_API_KEY.

    ``timeout_s`` is the socket timeout of every request but runs and commands, which wait for
    their own time limit plus RUN_TIMEOUT_MARGIN_S.
    """

    base_url: str = field(default_factory=lambda: os.environ.get("AGENTBOX_URL", DEFAULT_URL))
    api_key: Optional[str] = field(default_factory=lambda: os.environ.get("AGENTBOX_API_KEY"))
    timeout_s: float = 120.0

    def _open(self, method: str, path: str, body: Optional[bytes], content_type: Optional[str], accept: str, timeout_s: float) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        u = urllib.parse.urlsplit(self.base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port], got {self.base_url!r}")
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = cls(u.hostname, u.port, timeout=timeout_s)
        headers = {"accept": accept}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        if content_type:
            headers["content-type"] = content_type
        try:
            conn.request(method, u.path.rstrip("/") + path, body=body, headers=headers)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if resp.status >= 400:
            raw = resp.read()
            conn.close()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = None
            raise error_from_body(resp.status, parsed)
        return conn, resp

    def request(self, method: str, path: str, *, json_body: Any = None, data: Optional[bytes] = None, timeout_s: Optional[float] = None) -> bytes:
        body = json.dumps(json_body).encode() if json_body is not None else data
        ctype = "application/json" if json_body is not None else ("application/octet-stream" if data is not None else None)
        t = self.timeout_s if timeout_s is None else timeout_s
        with _timeouts(t, "timeout_s" if timeout_s is None else "the run's time limit + RUN_TIMEOUT_MARGIN_S"):
            conn, resp = self._open(method, path, body, ctype, "application/json", t)
            try:
                return resp.read()
            finally:
                conn.close()

    def json(self, method: str, path: str, json_body: Any = None, *, timeout_s: Optional[float] = None) -> Any:
        raw = self.request(method, path, json_body=json_body, timeout_s=timeout_s)
        return json.loads(raw) if raw else None

    def events(self, path: str, json_body: Any, *, timeout_s: Optional[float] = None) -> Iterator[Tuple[str, Any]]:
        """POST and yield (event, data) pairs of a Server-Sent Events response as they arrive.

        ``timeout_s`` bounds the wait for each line (a quiet run sends nothing until its result)."""
        t = self.timeout_s if timeout_s is None else timeout_s
        what = "timeout_s" if timeout_s is None else "the run's time limit + RUN_TIMEOUT_MARGIN_S"
        with _timeouts(t, what):
            conn, resp = self._open("POST", path, json.dumps(json_body).encode(), "application/json", "text/event-stream", t)
        try:
            event = "message"
            data: List[str] = []
            while True:
                with _timeouts(t, what):
                    raw = resp.readline()
                if not raw:
                    return
                line = raw.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data:
                        yield event, json.loads("\n".join(data))
                    event, data = "message", []  # next event
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
        finally:
            conn.close()


def _q(path: str) -> str:
    return urllib.parse.urlencode({"path": path})


class SandboxFiles:
    """The sandbox's file system. Paths are absolute guest paths."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def write(self, path: str, data: Union[str, bytes]) -> None:
        """Write a file, creating parent directories."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self._sb._conn.request("PUT", f"{self._sb._base}/files?{_q(path)}", data=raw)

    @overload
    def read(self, path: str) -> str: ...
    @overload
    def read(self, path: str, format: Literal["text"]) -> str: ...
    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes: ...
    def read(self, path: str, format: Literal["text", "bytes"] = "text") -> Union[str, bytes]:
        raw = self._sb._conn.request("GET", f"{self._sb._base}/files?{_q(path)}")
        if format == "bytes":
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NotTextError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); read it with files.read(path, format=\"bytes\")", code="NOT_TEXT") from e

    def list(self, path: str = "/") -> List[EntryInfo]:
        """Entries of a directory, sorted by name in code-point order."""
        d = self._sb._conn.json("GET", f"{self._sb._base}/files/list?{_q(path)}")
        return [EntryInfo(str(e["name"]), str(e["path"]), e["type"], int(e["size"])) for e in d["entries"]]

    def remove(self, path: str) -> None:
        self._sb._conn.request("DELETE", f"{self._sb._base}/files?{_q(path)}")

    def exists(self, path: str) -> bool:
        return bool(self._sb._conn.json("GET", f"{self._sb._base}/files/exists?{_q(path)}")["exists"])

    def make_dir(self, path: str) -> None:
        self._sb._conn.request("POST", f"{self._sb._base}/files/mkdir?{_q(path)}")


class SandboxCommands:
    """Processes in the sandbox (heavy tier; a nano sandbox raises TierUnavailableError)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    @overload
    def run(
        self,
        cmd: Union[str, Sequence[str]],
        *,
        background: Literal[True],
        timeout_ms: Optional[int] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> CommandHandle: ...
    @overload
    def run(
        self,
        cmd: Union[str, Sequence[str]],
        *,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
        timeout_ms: Optional[int] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[str, bytes, None] = None,
        background: Literal[False] = False,
    ) -> CommandResult: ...
    def run(
        self,
        cmd: Union[str, Sequence[str]],
        *,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
        timeout_ms: Optional[int] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[str, bytes, None] = None,
        background: bool = False,
    ) -> Union[CommandResult, CommandHandle]:
        """Run a command and wait for it: a string runs with ``/bin/bash -c``, a sequence is the argv.

        Output streams to on_stdout/on_stderr as it comes (Server-Sent Events). Past ``timeout_ms``
        (default: the sandbox's limits.timeoutMs) the command is killed and the result has
        ``limit_hit == "timeoutMs"``; a non-zero exit code is a result too, not an error.

        ``background=True`` returns a CommandHandle (pid, wait(), kill(), output so far) as soon as
        the command runs; it then has no time limit unless ``timeout_ms`` is given, and its output
        is read from the handle (no callbacks). A program that cannot start raises InvalidOptionsError.
        """
        body: Dict[str, Any] = {"cmd": cmd if isinstance(cmd, str) else list(cmd)}
        if timeout_ms is not None:
            body["timeoutMs"] = timeout_ms
        if cwd is not None:
            body["cwd"] = cwd
        if env is not None:
            body["env"] = dict(env)
        if isinstance(stdin, str):
            body["stdin"] = stdin
        elif stdin is not None:
            body["stdinBase64"] = base64.b64encode(bytes(stdin)).decode("ascii")
        path = f"{self._sb._base}/commands"
        if background:
            if on_stdout is not None or on_stderr is not None:
                raise ValueError("on_stdout/on_stderr stream a foreground command; read a background one's output from its handle (handle.stdout, handle.wait())")
            body["background"] = True
            return CommandHandle(self._sb, CommandInfo.from_json(self._sb._conn.json("POST", path, body)))
        wait_s = self._sb._run_wait_s(timeout_ms)
        if on_stdout is None and on_stderr is None:
            return CommandResult.from_json(self._sb._conn.json("POST", path, body, timeout_s=wait_s))
        return CommandResult.from_json(_stream(self._sb._conn, f"{path}/stream", body, on_stdout, on_stderr, wait_s))

    def list(self) -> List[CommandInfo]:
        """The background commands still running, oldest first."""
        return [CommandInfo.from_json(c) for c in self._sb._conn.json("GET", f"{self._sb._base}/commands")["commands"]]

    def connect(self, pid: int) -> CommandHandle:
        """The handle of a background command by its pid (NotFoundError when the server has none)."""
        d = self._sb._conn.json("GET", f"{self._sb._base}/commands/{int(pid)}")
        return CommandHandle(self._sb, CommandInfo.from_json(d))

    def kill(self, pid: int, signal: Literal["KILL", "TERM", "INT"] = "KILL") -> bool:
        """Kill a background command by its pid (and wait for it to end). False when it had already ended."""
        return bool(self._sb._conn.json("POST", f"{self._sb._base}/commands/{int(pid)}/kill", {"signal": signal})["killed"])


def _stream(
    conn: Connection,
    path: str,
    body: Any,
    on_stdout: Optional[Callable[[str], None]],
    on_stderr: Optional[Callable[[str], None]],
    timeout_s: float,
    on_result: Optional[Callable[[DisplayResult], None]] = None,
) -> Any:
    """Follow a streamed operation: chunks and rich results to the callbacks, then the ``result`` data (or raise its ``error``)."""
    for event, data in conn.events(path, body, timeout_s=timeout_s):
        if event == "stdout" and on_stdout is not None:
            on_stdout(data)
        elif event == "stderr" and on_stderr is not None:
            on_stderr(data)
        elif event == "display" and on_result is not None and isinstance(data, dict):
            on_result(DisplayResult.from_json(data))
        elif event == "result":
            return data
        elif event == "error":
            raise error_from_body(int(data.get("status", 500)), data)
    raise AgentboxError("the event stream ended without a result", code="PROTOCOL_ERROR")


class SandboxNetwork:
    """The sandbox's network, as its grant lets the guest use it (JavaScript sandboxes with ``network``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def log(self) -> List[NetworkLogEntry]:
        """Every attempt of the guest to reach the network, allowed or not: the last 1000, oldest
        first, one per request and per redirect hop. Empty for a sandbox without network; also
        answered for a closed sandbox."""
        d = self._sb._conn.json("GET", f"{self._sb._base}/network/log")
        return [NetworkLogEntry.from_json(e) for e in d["entries"]]


@dataclass(frozen=True)
class ExposedPort:
    """A port of a heavy-tier sandbox behind the server's reverse proxy."""

    port: int
    #: ``<server>/sandboxes/<id>/ports/<port>/``: any method and path under it goes to the port in
    #: the sandbox (WebSockets too), with the same ``Authorization`` header as the API (see
    #: ``SandboxPorts.headers``).
    url: str


class SandboxPorts:
    """Servers in a heavy-tier sandbox, reached through the server's authenticated reverse proxy."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def expose(self, port: int) -> str:
        """Expose ``port`` (a server listening on 127.0.0.1 or 0.0.0.0 in the sandbox) and return
        its proxy URL. Idempotent. Nothing needs to listen yet: until something does, requests
        to the URL answer 502 (PortUnreachableError). TierUnavailableError on a nano sandbox."""
        d = self._sb._conn.json("POST", f"{self._sb._base}/ports", {"port": port})
        return str(d["url"])

    def list(self) -> List[ExposedPort]:
        d = self._sb._conn.json("GET", f"{self._sb._base}/ports")
        return [ExposedPort(port=int(p["port"]), url=str(p["url"])) for p in d["ports"]]

    def close(self, port: int) -> None:
        """Stop proxying ``port``; open connections to it are cut. Idempotent."""
        self._sb._conn.request("DELETE", f"{self._sb._base}/ports/{int(port)}")

    def headers(self) -> Dict[str, str]:
        """The headers a request to a proxy URL needs (the API key; none on a server without keys)."""
        key = self._sb._conn.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class SnapshotInfo:
    """A saved sandbox of this key (``sb.snapshot()``): ``Sandbox.restore(snapshot.id)`` starts copies of it."""

    id: str
    sandbox_id: str
    tier: str
    language: str
    created_at: str
    expires_at: str

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "SnapshotInfo":
        return SnapshotInfo(id=d["id"], sandbox_id=d["sandboxId"], tier=d["tier"], language=d["language"], created_at=d["createdAt"], expires_at=d["expiresAt"])


class Sandbox:
    """A sandbox on an agentbox server. Use ``Sandbox.create(...)``, ideally in a ``with`` block."""

    def __init__(self, info: SandboxInfo, conn: Connection) -> None:
        self.info = info
        self._conn = conn
        self._base = f"/sandboxes/{urllib.parse.quote(info.id, safe='')}"
        self.files = SandboxFiles(self)
        self.commands = SandboxCommands(self)
        self.network = SandboxNetwork(self)
        self.ports = SandboxPorts(self)
        self._killed = False

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def seed(self) -> int:
        return self.info.seed

    @classmethod
    def create(
        cls,
        *,
        language: str = "python",
        tier: str = "nano",
        limits: Optional[Limits] = None,
        seed: Optional[int] = None,
        clock: Optional[Literal["virtual", "real"]] = None,
        env: Optional[Mapping[str, str]] = None,
        mounts: Optional[List[Mount]] = None,
        backend: Optional[Literal["auto", "gvisor", "microvm"]] = None,
        image: Optional[Literal["base", "data"]] = None,
        packages: Optional[List[str]] = None,
        network: Optional[Network] = None,
        idle_timeout_ms: Optional[int] = None,
        idle_action: Optional[Literal["pause", "kill"]] = None,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout_s: float = 120.0,
    ) -> "Sandbox":
        """Create a sandbox. Options are validated by the server; errors name the field.

        ``tier="heavy"`` gives a Debian userland (gVisor) with ``commands.run``; ``backend``,
        ``image`` (``"data"``: numpy, pandas, matplotlib, ... already imported) and ``packages``
        (extra Debian packages of a built image) apply to it. ``network`` (JavaScript sandboxes:
        ``{"allow": [...], "deny": [...]}``) gives the guest ``fetch`` to those hosts, within what the
        server grants this key; ``network.log()`` then records every attempt.
        """
        conn = _connection(base_url, api_key, timeout_s)
        body: Dict[str, Any] = {"language": language, "tier": tier}
        for k, v in (("limits", limits), ("seed", seed), ("clock", clock), ("env", env), ("mounts", mounts), ("backend", backend), ("image", image), ("packages", packages), ("network", network), ("idleTimeoutMs", idle_timeout_ms), ("idleAction", idle_action)):
            if v is not None:
                body[k] = dict(v) if isinstance(v, Mapping) else v
        return cls(SandboxInfo.from_json(conn.json("POST", "/sandboxes", body)), conn)

    @classmethod
    def connect(cls, sandbox_id: str, *, base_url: Optional[str] = None, api_key: Optional[str] = None, timeout_s: float = 120.0) -> "Sandbox":
        """Attach to an existing sandbox of this key."""
        conn = _connection(base_url, api_key, timeout_s)
        return cls(SandboxInfo.from_json(conn.json("GET", f"/sandboxes/{urllib.parse.quote(sandbox_id, safe='')}")), conn)

    @staticmethod
    def list(*, base_url: Optional[str] = None, api_key: Optional[str] = None, timeout_s: float = 120.0) -> List[SandboxInfo]:
        """This key's sandboxes."""
        conn = _connection(base_url, api_key, timeout_s)
        return [SandboxInfo.from_json(s) for s in conn.json("GET", "/sandboxes")["sandboxes"]]

    def run_code(
        self,
        code: str,
        *,
        timeout_ms: Optional[int] = None,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
        on_result: Optional[Callable[[DisplayResult], None]] = None,
    ) -> RunResult:
        """Run code with REPL semantics. With on_stdout/on_stderr, output is streamed as it happens;
        with on_result, each rich result (``display()``, a rich final value) as it happens, in order
        (the same ones are in the returned ``results``).

        The client waits for the run's time limit (``timeout_ms``, else the sandbox's
        limits.timeoutMs) plus RUN_TIMEOUT_MARGIN_S; past that it raises RequestTimeoutError and
        closes the connection, which interrupts the run in the server.
        """
        body: Dict[str, Any] = {"code": code}
        if timeout_ms is not None:
            body["timeoutMs"] = timeout_ms
        wait_s = self._run_wait_s(timeout_ms)
        if on_stdout is None and on_stderr is None and on_result is None:
            return RunResult.from_json(self._conn.json("POST", f"{self._base}/run", body, timeout_s=wait_s))
        return RunResult.from_json(_stream(self._conn, f"{self._base}/run/stream", body, on_stdout, on_stderr, wait_s, on_result))

    def _run_wait_s(self, timeout_ms: Optional[int]) -> float:
        """How long to wait for a run's answer: its time limit, the grace before a hard kill, a margin."""
        limit_ms = timeout_ms if timeout_ms is not None else self.info.limits.get("timeoutMs")
        if limit_ms is None:  # a server that does not report its limits
            return self._conn.timeout_s
        return max((limit_ms + self.info.limits.get("graceMs", 0)) / 1000.0 + RUN_TIMEOUT_MARGIN_S, 1.0)

    def pause(self) -> SandboxInfo:
        """Save the sandbox and end its process; any later call on it (or ``resume()``) brings it back."""
        self.info = SandboxInfo.from_json(self._conn.json("POST", f"{self._base}/pause", {}))
        return self.info

    def resume(self) -> SandboxInfo:
        """Bring a paused sandbox back now (a no-op for a running one)."""
        self.info = SandboxInfo.from_json(self._conn.json("POST", f"{self._base}/resume", {}))
        return self.info

    def snapshot(self) -> SnapshotInfo:
        """Save the sandbox's whole state as a snapshot of this key; the sandbox runs on."""
        return SnapshotInfo.from_json(self._conn.json("POST", f"{self._base}/snapshots", {}))

    def fork(self, count: int = 1, *, idle_timeout_ms: Optional[int] = None) -> List["Sandbox"]:
        """``count`` independent copies of this sandbox as it is now, each a new sandbox of this key."""
        body: Dict[str, Any] = {"count": count}
        if idle_timeout_ms is not None:
            body["idleTimeoutMs"] = idle_timeout_ms
        return [Sandbox(SandboxInfo.from_json(s), self._conn) for s in self._conn.json("POST", f"{self._base}/fork", body)["sandboxes"]]

    @classmethod
    def restore(cls, snapshot_id: str, *, idle_timeout_ms: Optional[int] = None, base_url: Optional[str] = None, api_key: Optional[str] = None, timeout_s: float = 120.0) -> "Sandbox":
        """Start a new sandbox from a snapshot of this key (the snapshot stays, for more restores)."""
        conn = _connection(base_url, api_key, timeout_s)
        body: Dict[str, Any] = {} if idle_timeout_ms is None else {"idleTimeoutMs": idle_timeout_ms}
        return cls(SandboxInfo.from_json(conn.json("POST", f"/snapshots/{urllib.parse.quote(snapshot_id, safe='')}/restore", body)), conn)

    @staticmethod
    def list_snapshots(*, base_url: Optional[str] = None, api_key: Optional[str] = None, timeout_s: float = 120.0) -> List[SnapshotInfo]:
        """This key's snapshots, oldest first."""
        conn = _connection(base_url, api_key, timeout_s)
        return [SnapshotInfo.from_json(s) for s in conn.json("GET", "/snapshots")["snapshots"]]

    @staticmethod
    def delete_snapshot(snapshot_id: str, *, base_url: Optional[str] = None, api_key: Optional[str] = None, timeout_s: float = 120.0) -> None:
        """Delete a snapshot of this key and its saved state."""
        conn = _connection(base_url, api_key, timeout_s)
        conn.request("DELETE", f"/snapshots/{urllib.parse.quote(snapshot_id, safe='')}")

    def refresh(self) -> SandboxInfo:
        self.info = SandboxInfo.from_json(self._conn.json("GET", self._base))
        return self.info

    def keep_alive(self, idle_timeout_ms: Optional[int] = None) -> SandboxInfo:
        """Restart the idle timer (optionally with a new idle timeout)."""
        body = {} if idle_timeout_ms is None else {"idleTimeoutMs": idle_timeout_ms}
        self.info = SandboxInfo.from_json(self._conn.json("POST", f"{self._base}/keepalive", body))
        return self.info

    def kill(self) -> None:
        """Stop the sandbox. Idempotent: a sandbox already gone is not an error."""
        if self._killed:
            return
        try:
            self._conn.request("DELETE", self._base)
        except AgentboxError as e:
            if e.status != 404:
                raise
        self._killed = True

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, tier={self.info.tier!r}, language={self.info.language!r})"


def _connection(base_url: Optional[str], api_key: Optional[str], timeout_s: float) -> Connection:
    c = Connection(timeout_s=timeout_s)
    return Connection(base_url=base_url or c.base_url, api_key=api_key if api_key is not None else c.api_key, timeout_s=timeout_s)
