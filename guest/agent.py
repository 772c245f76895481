#!/usr/bin/python3
# agentbox guest agent: runs inside a heavy-tier sandbox (gVisor today, a microVM later) and
# serves the host over its stdin/stdout with agentbox's framed protocol (a 4-byte big-endian
# length, then UTF-8 JSON). It execs commands with streamed output, kills them, reads and writes
# files, and drives a Python REPL (a child process started as `agent.py --repl`) for runCode.
# Standard library only. The host trusts nothing said here: this process shares the sandbox
# with the code it runs, so the host checks every frame.
#
# Privilege separation: started as root (gVisor gives it only CAP_SETUID, CAP_SETGID and
# CAP_KILL, an empty bounding set and no_new_privs), the agent runs every child -- commands and
# the REPL -- as GUEST_UID with no supplementary groups and no capabilities, and does file
# operations with GUEST_UID as its effective uid, so guest code can neither signal nor ptrace
# the agent nor open its memory or file descriptors. Started as any other user (a backend that
# drops privileges itself), it runs everything as that user, as before.
import os
import sys

GUEST_UID = 1000
GUEST_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/user", "LANG": "C.UTF-8", "USER": "user"}


def reset_oom_score():
    """In a child: undo the agent's OOM protection (the microVM's init starts the agent with
    oom_score_adj -1000), so the guest kernel's OOM killer picks guest code, never the agent.
    Raising one's own score needs no privilege; where the file is missing or refuses (gVisor has
    no OOM killer of its own), nothing is lost."""
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_RDWR)
    except OSError:
        return
    try:
        if int(os.read(fd, 16) or b"0") < 0:
            os.lseek(fd, 0, 0)
            os.write(fd, b"0")
    except (OSError, ValueError):
        pass
    finally:
        os.close(fd)


def become_guest():
    """In a child of a root agent: become GUEST_UID for good (clears every capability)."""
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(GUEST_UID)
        os.setuid(GUEST_UID)


def fork_early_repl():
    """Fork the first REPL before the agent imports anything but os and sys. gVisor makes every
    import slow; this way the REPL imports what it needs while the agent imports what it needs,
    in parallel, and the two share almost no pages (copy-on-write faults are slow in gVisor too).
    A fork costs ~10 ms there, a new interpreter ~90 ms; REPL restarts exec a fresh one."""
    (req_r, req_w), (resp_r, resp_w), (out_r, out_w), (err_r, err_w) = [os.pipe() for _ in range(4)]
    pid = os.fork()
    if pid == 0:
        try:
            reset_oom_score()
            become_guest()
            os.setsid()
            os.chdir(GUEST_ENV["HOME"])
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)  # fds 0 and 1 were the host channel: the REPL must not hold it
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (null, req_w, resp_r, out_r, out_w, err_r, err_w):
                if fd > 2:
                    os.close(fd)
            os.environ.clear()
            os.environ.update(GUEST_ENV)
        except BaseException:
            os._exit(1)
        return {"child": (req_r, resp_w)}
    for fd in (req_r, resp_w, out_w, err_w):
        os.close(fd)
    return {"pid": pid, "req": req_w, "resp": resp_r, "out": out_r, "err": err_r}


def fork_spawner():
    """Fork the spawner (see spawner_main) while the agent is small and nothing but os and sys is
    loaded: the child drops to GUEST_UID and execs `agent.py --spawner` with its ends of two
    socket pairs at fds 3 and 4. Dropping must happen before the exec: a root process keeps no
    capability across exec (the bounding set is empty), so it could not drop afterwards. The exec
    waits for the agent's go (Spawner.go: the sandbox's first command, which itself takes the old
    path), so a sandbox that only runs code never pays for a second interpreter (~0.2 s of a create
    under gVisor when it started with the REPL), and a pooled one starts it in its warm-up.
    {"pid", "req", "rep", "go"} (the agent's ends), or None where it cannot be started."""
    try:
        import _socket
        a_req, s_req = (s.detach() for s in _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET))
        a_rep, s_rep = (s.detach() for s in _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM))
        go_r, go_w = os.pipe()
    except (ImportError, OSError, AttributeError):
        return None
    try:
        pid = os.fork()
    except OSError:
        pid = None
    if pid == 0:
        try:
            reset_oom_score()  # while root (the file is root's); what it starts inherits the score
            become_guest()
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)  # fds 0 and 1 are the host channel: the spawner must not hold it
            os.dup2(null, 1)
            high = [os.dup2(s_req, 100, inheritable=False), os.dup2(s_rep, 101, inheritable=False)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)
            os.close(go_w)
            if os.read(go_r, 1) != b"g":  # the agent ended first
                os._exit(0)
            os.execve(sys.executable, [sys.executable, "-I", "-S", os.path.abspath(__file__), "--spawner"], GUEST_ENV)
        except BaseException:
            pass
        os._exit(1)
    os.close(s_req)
    os.close(s_rep)
    os.close(go_r)
    if pid is None:
        os.close(a_req)
        os.close(a_rep)
        os.close(go_w)
        return None
    return {"pid": pid, "req": a_req, "rep": a_rep, "go": go_w}


AGENT_START = __name__ == "__main__" and "--repl" not in sys.argv and "--spawner" not in sys.argv
EARLY_REPL = fork_early_repl() if AGENT_START else None
EARLY_SPAWNER = fork_spawner() if AGENT_START and "child" not in EARLY_REPL else None  # in the agent, not the REPL

import binascii  # noqa: E402 - after the early fork on purpose
import resource  # noqa: E402,F401 - loaded here, never in a child between fork and exec
import signal  # noqa: E402
import stat  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

# JSON through the C accelerator directly: the json package (and base64) import re, which with its
# dependencies costs tens of milliseconds to load in gVisor, on the path to the first result.
try:
    import _json

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
        memo = {}

    _scan = _json.make_scanner(_ScanContext())

    def _no_default(o):
        raise TypeError("%s is not JSON serializable" % type(o).__name__)

    _encode = _json.make_encoder(None, _no_default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)

    def json_loads(text):
        i = len(text) - len(text.lstrip())
        try:
            obj, end = _scan(text, i)
        except StopIteration:
            raise ValueError("not JSON") from None
        if text[end:].strip():
            raise ValueError("extra data after JSON")
        return obj

    def json_dumps(obj):
        return "".join(_encode(obj, 0))
except (ImportError, AttributeError, TypeError):  # another Python: the package
    import json

    def json_loads(text):
        return json.loads(text)

    def json_dumps(obj):
        return json.dumps(obj, separators=(",", ":"))


def b64decode(text):
    return binascii.a2b_base64(text)


PROTOCOL_VERSION = 2
MAX_FRAME = 64 << 20
BINARY = 0x80000000  # a frame length with this bit set: a binary frame (stream id, raw bytes)
STREAM_CHUNK = 256 << 10  # largest binary frame's data, both ways
STREAM_WINDOW = 8 << 20  # bytes of a stream either side sends ahead of the other's acks
ACK_BATCH = 1 << 20  # the channel thread acks a stream's data at the latest once this much is unacked
MAX_FILE = 40 << 20  # base64 of a file read must fit in one frame
DIGEST_ROOTS = ("/home/user", "/tmp")  # the sandbox's writable tree: what vfsDigest covers
CHUNK = 64 << 10
REPL_ARGV = [sys.executable, "-I", os.path.abspath(__file__), "--repl"]
PRIVILEGED = False  # set by main(): running as root, children drop to GUEST_UID

PROCESS_MEMORY = None  # RLIMIT_AS of every guest process, bytes (set by the host's configure)


def reserved_unused_bytes():
    """Address space this process has reserved but not touched (VmSize - VmRSS): what numpy,
    OpenBLAS and friends map ahead. 0 where /proc says nothing."""
    sizes = {}
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("VmSize:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    sizes[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, sizes.get("VmSize", 0) - sizes.get("VmRSS", 0))


def set_process_memory_limit(reserved=0):
    """RLIMIT_AS for this (guest) process: one greedy process gets ENOMEM (Python: MemoryError)
    before the sandbox's memory runs out; a lower hard limit cannot be raised again. `reserved`:
    address space already mapped but unused (the REPL after its warm imports), allowed on top, as
    the limit is meant for memory used: under a limit below what was mapped, OpenBLAS's next
    buffer allocation failed and numpy.linalg hung instead of raising."""
    if PROCESS_MEMORY:
        import resource  # noqa: F811 - the REPL forked before the agent loaded it
        limit = PROCESS_MEMORY + reserved
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def setup_child():
    """Runs in every child between fork and exec: OOM score back to default and the memory limit
    while still root (the OOM score file is root's until exec), then GUEST_UID for good."""
    reset_oom_score()
    set_process_memory_limit()
    become_guest()


def setup_repl_child():
    """setup_child for a restarted REPL: it sets its own memory limit once its warm imports are
    done (repl_main), counting the address space they reserved."""
    reset_oom_score()
    become_guest()


def child_credentials(repl=False):
    """Popen arguments that start a child as a guest process (setup_child before exec)."""
    return {"preexec_fn": setup_repl_child if repl else setup_child}


class AsGuest:
    """File operations with the guest's effective uid: files it creates belong to the guest and
    permission checks are the guest's. Only the agent's main thread forks, so no child is started
    while the effective uid is switched."""

    def __enter__(self):
        if PRIVILEGED:
            os.setegid(GUEST_UID)
            os.seteuid(GUEST_UID)

    def __exit__(self, *exc):
        if PRIVILEGED:
            os.seteuid(0)
            os.setegid(0)


def read_exact(source, n):
    """`n` bytes from a buffered reader (the agent's channel) or a raw fd (the REPL's pipes), or None at the end."""
    if not isinstance(source, int):
        data = source.read(n)
        return data if len(data) == n else None
    buf = bytearray()
    while len(buf) < n:
        b = os.read(source, n - len(buf))
        if not b:
            return None
        buf += b
    return bytes(buf)


def read_frame(fd):
    """The next message (a dict), a (stream id, bytes) pair for a binary frame, or None at the end.
    The agent's channel is read through a buffered reader: a frame's head and body (and the next
    frames) come in one read, which matters under gVisor where each read is costly."""
    head = read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n & BINARY:
        n &= ~BINARY
        if n < 4 or n - 4 > STREAM_CHUNK:
            raise ValueError("binary frame too large")
        body = read_exact(fd, n)
        if body is None:
            return None
        return struct.unpack(">I", body[:4])[0], body[4:]
    if n > MAX_FRAME:
        raise ValueError("frame too large")
    body = read_exact(fd, n)
    if body is None:
        return None
    return json_loads(body.decode("utf-8"))


class ChannelReader:
    """The agent's channel, read in large reads into one buffer allocated once: under gVisor's
    ptrace platform every read and every page fault on fresh memory is costly, so a stream's data
    is handed on as a view into this buffer (valid until the next frame is read), not a copy.
    `pending()` says whether a whole frame is buffered, so the agent can send what it has batched
    (acks) before it blocks on the next read."""

    SIZE = 4 << 20  # more than the largest binary frame; a larger JSON frame gets a buffer of its own

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray(self.SIZE)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def pending(self):
        avail = self.end - self.start
        if avail < 4:
            return False
        (n,) = struct.unpack_from(">I", self.buf, self.start)
        return avail >= 4 + (n & ~BINARY)

    def fill(self, n):
        """At least `n` bytes buffered (n <= SIZE); False at the end of the channel."""
        while self.end - self.start < n:
            if self.start and self.SIZE - self.start < n:
                left = self.end - self.start
                self.view[:left] = self.view[self.start:self.end]
                self.start, self.end = 0, left
            got = os.readv(self.fd, [self.view[self.end:]])
            if not got:
                return False
            self.end += got
        return True

    def take(self, n):
        v = self.view[self.start:self.start + n]
        self.start += n
        if self.start == self.end:
            self.start = self.end = 0
        return v

    def frame(self):
        """The next message (a dict), a (stream id, memoryview) pair for a binary frame, or None at the end."""
        if not self.fill(4):
            return None
        (n,) = struct.unpack_from(">I", self.buf, self.start)
        if n & BINARY:
            n &= ~BINARY
            if n < 4 or n - 4 > STREAM_CHUNK:
                raise ValueError("binary frame too large")
            if not self.fill(4 + n):
                return None
            (sid,) = struct.unpack_from(">I", self.buf, self.start + 4)
            return sid, self.take(4 + n)[8:]
        if n > MAX_FRAME:
            raise ValueError("frame too large")
        if n + 4 <= self.SIZE:
            if not self.fill(4 + n):
                return None
            return json_loads(str(self.take(4 + n)[4:], "utf-8"))
        # A frame larger than the buffer (a big file write): what is buffered, then the rest.
        self.take(4)
        have = bytes(self.take(self.end - self.start))
        rest = read_exact(self.fd, n - len(have))
        if rest is None:
            return None
        return json_loads((have + rest).decode("utf-8"))


class Channel:
    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, msg):
        body = json_dumps(msg).encode()
        self.write(struct.pack(">I", len(body)) + body)

    def send_data(self, stream, data):
        self.write(struct.pack(">II", BINARY | (4 + len(data)), stream) + data)

    def write(self, data):
        # An interrupt (SIGINT -> KeyboardInterrupt) must not cut a frame in half: hold it until
        # the frame is out. Only the main thread may change the signal mask's effect here.
        masked = threading.current_thread() is threading.main_thread()
        if masked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with self.lock:
                view = memoryview(data)
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
        finally:
            if masked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def b64(data):
    return binascii.b2a_base64(data, newline=False).decode("ascii")


# What the REPL adds to its environment (the caller's env can override it): matplotlib draws
# through display.py's backend, which turns figures into image/png results (Jupyter's inline
# backend does the same); OpenBLAS runs on the REPL's own thread (its thread pool, started by a
# warm import before the REPL's memory limit is set, deadlocked in numpy.linalg under gVisor).
REPL_ENV = {"MPLBACKEND": "module://_agentbox_matplotlib", "MPLCONFIGDIR": "/tmp/.agentbox-matplotlib", "OPENBLAS_NUM_THREADS": "1"}


def warm_imports():
    """Import what the image lists in warm.json (pandas, matplotlib, ...) before the first run, so
    a pooled or snapshotted sandbox has them loaded. A module that fails here fails again in the
    caller's cell, with its traceback; nothing is reported now."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm.json"), encoding="utf-8") as f:
            names = json_loads(f.read())
    except (OSError, ValueError):
        return
    if not isinstance(names, list) or not names:
        return
    fonts = "/opt/agentbox/matplotlib"  # the font list the image build made (image.ts)
    if "matplotlib" in names and os.path.isdir(fonts) and not os.path.exists(REPL_ENV["MPLCONFIGDIR"]):
        try:
            os.mkdir(REPL_ENV["MPLCONFIGDIR"], 0o700)
            for name in os.listdir(fonts):
                if name.endswith(".json"):
                    with open(os.path.join(fonts, name), "rb") as src, open(os.path.join(REPL_ENV["MPLCONFIGDIR"], name), "wb") as dst:
                        dst.write(src.read())
        except OSError:
            pass  # matplotlib builds the list itself
    for name in names:
        if isinstance(name, str):
            try:
                __import__(name)
            except BaseException:
                pass
    # A first chart and table load what imports leave for later (the Agg backend, fonts, tick and
    # HTML formatting code): done here, a pooled sandbox's first chart costs its drawing only.
    plt, pd = sys.modules.get("matplotlib.pyplot"), sys.modules.get("pandas")
    try:
        if plt is not None:
            import io
            fig = plt.figure()
            fig.gca().plot([0, 1], [1, 0])
            fig.gca().set_title("warm-up")
            fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
            plt.close("all")
        if pd is not None:
            pd.DataFrame({"a": [1.5, 2.5]}).describe()._repr_html_()
    except BaseException:
        pass


def _make_display(emit=None):
    # The display machinery is guest/display.py, shared with the nano tier; the image has it
    # beside this file. Loaded into a namespace of its own, not importable by the guest's code.
    ns = {"__name__": "_agentbox_display"}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "display.py")
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), ns)
    return ns["_make_display"](emit)



# ---------------------------------------------------------------------------------------------
# The REPL child: globals persist across runs; a trailing expression's repr is the value.


def repl_main(fds=None):
    import _ast  # the ast package and traceback/linecache load slowly in gVisor: see format_error
    import io

    req_fd, resp_fd = fds if fds else (int(sys.argv[2]), int(sys.argv[3]))
    if "site" not in sys.modules:  # forked from the agent, which runs with -S
        import site
        site.main()
    chan = Channel(resp_fd)
    state = {"run": None, "n": 0}
    cells = {}  # cell file name -> linecache entry

    class ChanWriter(io.TextIOBase):
        def __init__(self, stream):
            self.stream = stream
            self.buf = []
            self.size = 0

        def writable(self):
            return True

        def write(self, s):
            if not isinstance(s, str):
                raise TypeError("write() argument must be str, not %s" % type(s).__name__)
            self.buf.append(s)
            self.size += len(s)
            if "\n" in s or self.size > 8192:
                self.flush()
            return len(s)

        def flush(self):
            if self.buf:
                data = "".join(self.buf).encode("utf-8", "surrogateescape")
                self.buf, self.size = [], 0
                for i in range(0, len(data), CHUNK):
                    chan.send({"type": "output", "stream": self.stream, "data": b64(data[i:i + CHUNK])})

        @property
        def encoding(self):
            return "utf-8"

    sys.stdout = ChanWriter("stdout")
    sys.stderr = ChanWriter("stderr")
    writers = (sys.stdout, sys.stderr)

    def emit_display(result):
        # Each result goes to the host as it happens, in its own frame (the final `result` frame
        # then carries only what was not sent). Printed text still buffered goes first, so the
        # host sees output and results in the order the cell made them.
        for w in writers:
            try:
                w.flush()
            except Exception:
                pass
        try:
            chan.send({"type": "display", "result": result})
        except (OSError, TypeError, ValueError):
            return False
        return True

    import builtins
    display, display_begin, display_main, display_finish = _make_display(emit_display)
    builtins.display = display

    # SIGINT (the host's interrupt) raises KeyboardInterrupt only while a run is in progress.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    import __main__
    sys.path.insert(0, "")

    def format_error(exc):
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
            tb = tb.tb_next
        try:
            import linecache
            import traceback
            linecache.cache.update(cells)
            text = "".join(traceback.format_exception(type(exc), exc, tb))
        except BaseException:
            text = type(exc).__name__ + "\n"
        try:
            message = str(exc)
        except BaseException:
            message = "<unprintable>"
        return {"name": type(exc).__name__, "message": message[:65536], "traceback": text[-262144:]}

    def run(code, value_cap):
        state["n"] += 1
        filename = "<cell-%d>" % state["n"]
        cells[filename] = (len(code), None, code.splitlines(True), filename)
        if "linecache" in sys.modules:  # for warnings and inspect, once something loaded it
            sys.modules["linecache"].cache.update(cells)
        g = __main__.__dict__
        value, error = None, None
        display_begin(value_cap - 1)
        try:
            tree = compile(code, filename, "exec", _ast.PyCF_ONLY_AST)
            last = None
            if tree.body and isinstance(tree.body[-1], _ast.Expr):
                last = _ast.Expression(tree.body.pop().value)
            exec(compile(tree, filename, "exec"), g)
            if last is not None:
                result = eval(compile(last, filename, "eval"), g)
                if result is not None:
                    value = repr(result)[:value_cap]
                    display_main(result, value)
        except BaseException as exc:  # the guest's exception is a result, not a crash
            error = format_error(exc)
        for w in (sys.stdout, sys.stderr):
            try:
                w.flush()
            except BaseException:
                pass
        return value, error

    os.environ.update(REPL_ENV)
    warm_imports()
    reserved = reserved_unused_bytes() if sys.modules.get("numpy") else 0
    # A forked REPL shares its pages with the agent; gVisor's copy-on-write faults are slow, so
    # take the few left now (a full collection touches every object) rather than in the first run.
    import gc
    gc.collect()
    chan.send({"type": "ready"})
    while True:
        msg = read_frame(req_fd)
        if msg is None:
            return
        if msg.get("type") == "configure":
            os.environ.clear()
            os.environ.update(REPL_ENV)
            os.environ.update(msg.get("env") or {})
            if msg.get("seed") is not None:
                import random
                random.seed(msg["seed"])
                if "numpy" in sys.modules:  # numpy's legacy global generator, as seeded as `random`
                    try:
                        sys.modules["numpy"].random.seed(msg["seed"] % (1 << 32))
                    except Exception:
                        pass
            limit = msg.get("processMemoryBytes")
            if isinstance(limit, int) and limit > 0:
                global PROCESS_MEMORY
                PROCESS_MEMORY = limit
                try:
                    set_process_memory_limit(reserved)
                except (OSError, ValueError):
                    pass
            continue
        t0 = time.monotonic()
        state["run"] = msg.get("id")
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            value, error = run(msg.get("code", ""), int(msg.get("valueCap", 1 << 20)))
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except KeyboardInterrupt as exc:  # arrived between the run and here
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            value, error = None, format_error(exc)
        finally:
            state["run"] = None
        results, cut = display_finish()
        chan.send({"type": "result", "value": value, "error": error, "durationMs": (time.monotonic() - t0) * 1000, "results": results, "resultsCut": cut})


# ---------------------------------------------------------------------------------------------
# The agent.


STDIN_PENDING_MAX = 8 << 20  # bytes queued for a command's open stdin and not yet written


class StdinFeed:
    """A background command's open stdin (exec with stdinOpen): what the host sends is written in
    order by a thread of its own, so a command that does not read never blocks the agent; at most
    STDIN_PENDING_MAX bytes wait. Closed by the host (EOF for the command) or when it exits."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.cond = threading.Condition()
        self.chunks = []
        self.pending = 0
        self.closing = False
        self.broken = False
        try:
            threading.Thread(target=self.loop, daemon=True).start()
        except RuntimeError:  # no thread left (a fork bomb): this stdin takes nothing
            self.broken = True
            self.close_pipe()

    def put(self, data):
        """None, or the errno name of why `data` was refused."""
        with self.cond:
            if self.closing or self.broken:
                return "EPIPE"
            if self.pending + len(data) > STDIN_PENDING_MAX:
                return "EAGAIN"
            self.chunks.append(data)
            self.pending += len(data)
            self.cond.notify()
        return None

    def close(self):
        with self.cond:
            self.closing = True
            self.cond.notify()

    def loop(self):
        while True:
            with self.cond:
                while not self.chunks and not self.closing and not self.broken:
                    self.cond.wait()
                if not self.chunks or self.broken:
                    break
                data = self.chunks.pop(0)
            try:
                self.pipe.write(data)
                self.pipe.flush()
            except (OSError, ValueError):
                with self.cond:
                    self.broken = True
                    self.chunks = []
                    self.pending = 0
                break
            with self.cond:
                self.pending = max(0, self.pending - len(data))
        self.close_pipe()

    def close_pipe(self):
        try:
            self.pipe.close()
        except (OSError, ValueError):
            pass


# ---------------------------------------------------------------------------------------------
# The spawner: a small process started once, at the agent's start, that has already dropped to
# GUEST_UID (no groups, no capabilities, own session) and starts commands for the agent with
# vfork+exec. A root agent cannot do that itself: Python forks (not vforks) a child that must
# change its uid, and a fork of the agent costs tens of ms under gVisor. The spawner holds
# nothing the guest lacks (it runs as the guest; it gets a command's argv, env, cwd and pipes),
# so guest code that kills or ptraces it only loses itself the fast path: the agent falls back
# to starting commands itself, and trusts no pid the spawner names without checking /proc.

SPAWN_MAX = 60 << 10  # largest spawn request (argv, env, cwd as JSON); larger ones take the old path
SPAWN_REPLY_TIMEOUT = 10.0  # seconds the agent waits for a spawn's answer before giving up on the spawner
SPAWNER_REQ_FD, SPAWNER_REP_FD = 3, 4  # the spawner's ends: requests (SOCK_SEQPACKET), exit reports (stream)


def cap_eff():
    """This process's effective capability set, or None where /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None


def spawner_main():
    """The spawner process (`agent.py --spawner`, started by fork_spawner as the guest user with
    its two sockets at SPAWNER_REQ_FD and SPAWNER_REP_FD). Requests: one JSON message each {argv, env,
    cwd, as} with the command's stdin, stdout and stderr fds; answer {"pid"} or {"error"} (the
    agent then starts the command itself, for the same error message). Exit statuses go out on
    the report socket as (pid, wait status) pairs, (0, 0) first to say it is ready. Ends when
    the agent's end of the request socket closes."""
    if os.getuid() == 0 or os.geteuid() == 0 or cap_eff() not in (0, None):
        os._exit(1)  # fork_spawner drops privileges before the exec: this one did not
    os.chdir("/")
    import socket
    import subprocess
    req = socket.socket(fileno=SPAWNER_REQ_FD)
    rep = socket.socket(fileno=SPAWNER_REP_FD)
    spawned = threading.Event()

    def reaper():
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                spawned.wait()
                spawned.clear()
                continue
            try:
                rep.sendall(struct.pack(">ii", pid, status))
            except OSError:
                os._exit(0)

    threading.Thread(target=reaper, daemon=True).start()
    rep.sendall(struct.pack(">ii", 0, 0))
    while True:
        try:
            data, fds, flags, _ = socket.recv_fds(req, SPAWN_MAX + 1, 3)
        except OSError:
            break
        if not data and not fds:
            break
        reply = spawner_start(subprocess, data, fds, flags & socket.MSG_TRUNC or flags & socket.MSG_CTRUNC)
        for fd in fds:
            os.close(fd)
        if "pid" in reply:
            spawned.set()
        try:
            req.send(json_dumps(reply).encode())
        except OSError:
            break
    os._exit(0)


def spawner_start(subprocess, data, fds, truncated):
    """In the spawner: start one command as asked; {"pid": n} or {"error": why}."""
    if truncated or len(fds) != 3 or len(data) > SPAWN_MAX:
        return {"error": "bad request"}
    try:
        msg = json_loads(data.decode("utf-8"))
        argv, env, cwd, limit = msg["argv"], msg["env"], msg["cwd"], msg.get("as")
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            return {"error": "bad argv"}
        if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            return {"error": "bad env"}
        if not isinstance(cwd, str) or not (limit is None or isinstance(limit, int) and limit > 0):
            return {"error": "bad request"}
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if limit is not None and (hard == resource.RLIM_INFINITY or hard > limit):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # as setup_child does, once for all
        elif (limit is None) != (hard == resource.RLIM_INFINITY) or limit is not None and hard != limit:
            return {"error": "memory limit differs"}  # a limit cannot be raised again: the old path
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=fds[0], stdout=fds[1], stderr=fds[2], start_new_session=True, close_fds=True)
    except Exception as e:  # noqa: BLE001 - any failure: the agent's own path reports it
        return {"error": ("%s: %s" % (type(e).__name__, e))[:200]}
    p.returncode = 0  # reaped by the reaper thread (waitpid(-1)), never by Popen itself
    return {"pid": p.pid}


class SpawnedProc:
    """A command the spawner started, with the part of Popen's interface the agent uses. Its exit
    status comes from the spawner's reports (Spawner.reports)."""

    def __init__(self, pid, stdin, stdout, stderr):
        self.pid = pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode = None
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.on_exit = None

    def set_exit(self, status, lost=False):
        with self.lock:
            if self.returncode is not None:
                return
            if lost:
                self.returncode = 255
            else:
                try:
                    self.returncode = os.waitstatus_to_exitcode(status)
                except ValueError:
                    self.returncode = 255
            hook = self.on_exit
        if hook is not None:
            hook()  # before `done`: whoever waits on it may free what the hook uses
        self.done.set()

    def when_exited(self, hook):
        """Call `hook` (once, from the thread that learns of the exit) when it has exited."""
        with self.lock:
            self.on_exit = hook
            now = self.returncode is not None
        if now:
            hook()

    def poll(self):
        return self.returncode

    def wait(self):
        self.done.wait()
        return self.returncode


class Spawner:
    """The agent's side of the spawner: start it, ask it to start commands, read its exit
    reports. Every failure makes `spawn` return None: the caller starts the command itself."""

    def __init__(self):
        self.pid = None
        self.req = self.rep = None
        self.req_fd = self.rep_fd = self.go_fd = None
        self.reaped = False
        self.ready = False
        self.dead = True
        self.uid = GUEST_UID if os.getuid() == 0 else os.getuid()  # what its children must run as
        self.lock = threading.Lock()
        self.running = {}  # pid -> SpawnedProc not yet reported
        self.early = {}  # pid -> wait status reported before its spawn was answered
        self.devnull = None

    def start(self, early):
        """Take over the spawner fork_spawner started; it says when it is ready (`reports`)."""
        if not early:
            return
        self.pid = early["pid"]
        self.req_fd, self.rep_fd, self.go_fd = early["req"], early["rep"], early["go"]
        try:
            self.devnull = os.open(os.devnull, os.O_RDONLY)  # commands' stdin when they get none
        except OSError:
            return self.fail()
        self.dead = False
        start_thread(self.reports)

    def go(self):
        """Let the spawner start up (once, at the first command)."""
        with self.lock:
            fd, self.go_fd = self.go_fd, None
        if fd is not None:
            try:
                os.write(fd, b"g")
            except OSError:
                pass
            os.close(fd)

    def reports(self):
        import socket  # here, off the main thread: spawn() uses it once the spawner is ready
        try:
            self.req = socket.socket(fileno=self.req_fd)
            self.req.settimeout(SPAWN_REPLY_TIMEOUT)
            self.rep = socket.socket(fileno=self.rep_fd)
        except OSError:
            self.rep = None
        buf = b""
        while self.rep is not None:
            try:
                data = self.rep.recv(4096)
            except OSError:
                break
            if not data:
                break
            buf += data
            while len(buf) >= 8:
                pid, status = struct.unpack(">ii", buf[:8])
                buf = buf[8:]
                if pid == 0:
                    self.ready = True
                else:
                    self.exited(pid, status)
        self.fail()
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass
        with self.lock:
            self.reaped = True  # its pid may be reused from now on: never signalled again
            left = list(self.running.values())
            self.running.clear()
            self.early.clear()
        for p in left:
            start_thread(self.orphan, p)

    def exited(self, pid, status):
        with self.lock:
            p = self.running.pop(pid, None)
            if p is None:
                if len(self.early) >= 256:  # a spawner flooding made-up reports
                    self.early.clear()
                self.early[pid] = status
                return
        p.set_exit(status)

    def orphan(self, p):
        """A command whose spawner ended before it did: reparented to this agent (gVisor's PID 1)
        it is waited for here; elsewhere init reaps it and its status is lost (255)."""
        while True:
            try:
                done, status = os.waitpid(p.pid, os.WNOHANG)
                if done:
                    return p.set_exit(status)
            except ChildProcessError:
                if not os.path.exists("/proc/%d" % p.pid):
                    return p.set_exit(0, lost=True)
            except OSError:
                return p.set_exit(0, lost=True)
            time.sleep(0.05)

    def fail(self):
        """Stop using the spawner (dead, lying, or stuck) and make sure it is gone."""
        with self.lock:
            self.dead = True
            self.ready = False
            if self.pid is not None and not self.reaped:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except OSError:
                    pass

    def child_ok(self, pid):
        """Whether `pid` is the spawner's child running as the guest (or already gone)."""
        try:
            with open("/proc/%d/status" % pid, "rb") as f:
                fields = dict(line.split(b":", 1) for line in f if b":" in line)
        except FileNotFoundError:
            return True  # exited and reaped already: its report is on the way
        except OSError:
            return False
        try:
            return (int(fields[b"PPid"]) == self.pid and all(int(x) == self.uid for x in fields[b"Uid"].split())
                    and all(int(x) == self.uid for x in fields[b"Gid"].split()))
        except (KeyError, ValueError):
            return False

    def spawn(self, argv, env, cwd, with_stdin):
        """A SpawnedProc for the command, or None (the caller starts it itself)."""
        if self.dead or not self.ready:
            return None
        body = json_dumps({"argv": argv, "env": env, "cwd": cwd, "as": PROCESS_MEMORY}).encode()
        if len(body) > SPAWN_MAX:
            return None
        import socket
        mine, theirs = [], []
        try:
            out_r, out_w = os.pipe()
            mine.append(out_r)
            theirs.append(out_w)
            err_r, err_w = os.pipe()
            mine.append(err_r)
            theirs.append(err_w)
            if with_stdin:
                in_r, in_w = os.pipe()
                mine.append(in_w)
                theirs.append(in_r)
            else:
                in_r = in_w = None
        except OSError:
            for fd in mine + theirs:
                os.close(fd)
            return None
        try:
            socket.send_fds(self.req, [body], [in_r if with_stdin else self.devnull, out_w, err_w])
            reply = self.req.recv(4096)
        except OSError:  # socket.timeout is one: stuck (stopped by guest code?)
            reply = None
            self.fail()
        finally:
            for fd in theirs:
                os.close(fd)
        pid = None
        if reply:
            try:
                pid = json_loads(reply.decode("utf-8")).get("pid")
            except (ValueError, UnicodeDecodeError, AttributeError):
                pid = None
        if pid is not None and not (type(pid) is int and 1 < pid < (1 << 22) and pid != self.pid and self.child_ok(pid)):
            self.fail()  # a pid that is not its guest child: the spawner is not to be believed
            pid = None
        if pid is None:
            for fd in mine:
                os.close(fd)
            return None
        p = SpawnedProc(pid, open(in_w, "wb") if with_stdin else None, open(out_r, "rb", buffering=0), open(err_r, "rb", buffering=0))
        with self.lock:
            status = self.early.pop(pid, None)
            orphaned = self.reaped  # the spawner ended since it answered: nobody reports this one
            if status is None and not orphaned:
                self.running[pid] = p
        if status is not None:
            p.set_exit(status)
        elif orphaned:
            start_thread(self.orphan, p)
        return p


class Agent:
    def __init__(self, chan):
        self.chan = chan
        self.procs = {}  # exec id -> Popen
        self.stdin_feeds = {}  # exec id -> StdinFeed of a command started with its stdin open
        self.digester = Digester()
        self.env = dict(GUEST_ENV)
        self.seed = None
        self.repl = None
        self.repl_lock = threading.Lock()
        self.repl_run = None  # (id, OOM kills when it started) of the run in progress
        self.repl_ready = None
        self.watchdog = None
        self.memory_killed = set()  # sessions the watchdog killed a process of
        self.streams = Streams(chan)
        self.spawner = Spawner()

    # ---- REPL -------------------------------------------------------------------------------
    def start_repl(self):
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        import subprocess
        p = subprocess.Popen(
            REPL_ARGV + [str(req_r), str(resp_w)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd="/home/user", env=self.env, pass_fds=(req_r, resp_w), start_new_session=True, **child_credentials(repl=True),
        )
        os.close(req_r)
        os.close(resp_w)
        repl = {"proc": p, "req": req_w, "resp": resp_r, "ready": threading.Event()}
        self.repl = repl
        start_thread(self.repl_reader, repl)
        for stream, pipe in (("stdout", p.stdout), ("stderr", p.stderr)):
            start_thread(self.repl_pump, repl, stream, pipe.fileno())
        if self.seed is not None or self.env or PROCESS_MEMORY:
            self.repl_send(repl, self.repl_config())
        return repl

    def adopt_early_repl(self, early):
        """Serve the REPL forked at start-up (fork_early_repl)."""
        repl = {"proc": Forked(early["pid"]), "req": early["req"], "resp": early["resp"], "ready": threading.Event()}
        self.repl = repl
        start_thread(self.repl_reader, repl)
        for stream in ("out", "err"):
            start_thread(self.repl_pump, repl, "stdout" if stream == "out" else "stderr", early[stream])

    def repl_config(self):
        return {"type": "configure", "env": self.env, "seed": self.seed, "processMemoryBytes": PROCESS_MEMORY}

    def repl_send(self, repl, msg):
        body = json_dumps(msg).encode()
        try:
            os.write(repl["req"], struct.pack(">I", len(body)) + body)
        except OSError:
            pass

    def repl_pump(self, repl, stream, fd):
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                return
            if not data:
                return
            run = self.repl_run
            if run is not None and self.repl is repl:
                self.chan.send({"type": "output", "id": run[0], "stream": stream, "data": b64(data)})
            elif run is None:  # before any run (start-up): kept, to say why a REPL did not start
                repl["tail"] = (repl.get("tail", b"") + data)[-2048:]

    def repl_reader(self, repl):
        while True:
            try:
                msg = read_frame(repl["resp"])
            except Exception:
                msg = None
            if msg is None or not isinstance(msg, dict):
                run = self.repl_run
                oom = run is not None and self.out_of_memory(repl["proc"].pid, wait_briefly(repl["proc"]), run[1])
                repl["proc"].kill()
                if oom:
                    error = {"name": "ReplExited", "message": "the Python REPL was killed for lack of memory (the sandbox's memory limit); its state was lost", "traceback": ""}
                else:
                    error = {"name": "ReplExited", "message": "the Python REPL exited; its state was lost", "traceback": ""}
                self.finish_run(repl, {"value": None, "error": error, "durationMs": 0, "oomKilled": oom})
                return
            kind = msg.get("type")
            if kind == "ready":
                repl["ready"].set()
            elif kind == "output":
                run = self.repl_run
                if run is not None:
                    self.chan.send({"type": "output", "id": run[0], "stream": msg.get("stream"), "data": msg.get("data")})
            elif kind == "display":
                # A rich result as the run makes it, passed on as it is: the host checks it.
                run = self.repl_run
                if run is not None:
                    self.chan.send({"type": "display", "id": run[0], "result": msg.get("result")})
            elif kind == "result":
                self.finish_run(repl, msg)

    def finish_run(self, repl, msg):
        run = self.repl_run
        if run is None or self.repl is not repl:
            return
        self.repl_run = None
        time.sleep(0)  # let the fd pumps forward what the run wrote straight to fd 1/2
        result = {"type": "result", "id": run[0], "value": msg.get("value"), "error": msg.get("error"), "durationMs": msg.get("durationMs", 0)}
        if msg.get("oomKilled") is True:
            result["oomKilled"] = True
        # The REPL's rich results, passed on as they are: the host checks each one.
        if isinstance(msg.get("results"), list) and msg["results"]:
            result["results"] = msg["results"]
        if msg.get("resultsCut") is True:
            result["resultsCut"] = True
        try:
            result["vfsDigest"] = self.digester.digest()
        except Exception:  # e.g. under a fork bomb: the run's result matters more
            pass
        self.chan.send(result)

    def do_run(self, msg):
        with self.repl_lock:
            repl = self.repl
            if repl is None or repl["proc"].poll() is not None:
                repl = self.start_repl()
        # A REPL with warm imports (the data image) takes seconds to say ready, minutes under
        # software emulation: wait while it lives (the host's time limit bounds the run).
        deadline = time.monotonic() + 900
        while not repl["ready"].wait(0.5) and repl["proc"].poll() is None and time.monotonic() < deadline:
            pass
        if not repl["ready"].is_set():
            status = repl["proc"].poll()
            why = "" if status is None else " (it exited with status %s)" % status
            tail = repl.get("tail", b"").decode("utf-8", "replace").strip()
            self.chan.send({"type": "result", "id": msg["id"], "value": None, "error": {"name": "ReplExited", "message": "the Python REPL did not start" + why + (":\n" + tail if tail else ""), "traceback": ""}, "durationMs": 0})
            return
        self.repl_run = (msg["id"], oom_kills())
        self.repl_send(repl, {"type": "run", "id": msg["id"], "code": msg.get("code", ""), "valueCap": msg.get("valueCap", 1 << 20)})

    def do_interrupt(self, msg):
        run, repl = self.repl_run, self.repl
        if run is None or repl is None or run[0] != msg.get("target"):
            return
        if msg.get("hard"):
            # The run ignored the interrupt: end the REPL (its state is lost); the next run starts a new one.
            with self.repl_lock:
                self.repl = None
            try:
                os.killpg(repl["proc"].pid, signal.SIGKILL)
            except OSError:
                pass
            self.repl_run = None
            self.chan.send({"type": "result", "id": run[0], "value": None, "error": {"name": "KeyboardInterrupt", "message": "the run was stopped and the REPL restarted; its state was lost", "traceback": ""}, "durationMs": 0, "restarted": True})
        else:
            try:
                repl["proc"].send_signal(signal.SIGINT)
            except OSError:
                pass

    # ---- exec -------------------------------------------------------------------------------
    def do_exec(self, msg):
        mid = msg["id"]
        env = dict(self.env)
        env.update(msg.get("env") or {})
        stdin = msg.get("stdin")
        keep_stdin = bool(msg.get("stdinOpen"))
        self.spawner.go()
        p = self.spawner.spawn(msg["argv"], env, msg.get("cwd") or "/home/user", stdin is not None or keep_stdin)
        try:
            if p is None:  # no spawner (yet, any more) or it declined: started here, forked and dropped
                import subprocess  # on first use: loading it in the background slowed the first run down
                p = subprocess.Popen(
                    msg["argv"], cwd=msg.get("cwd") or "/home/user", env=env,
                    stdin=subprocess.PIPE if stdin is not None or keep_stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **child_credentials(),
                )
        except OSError as e:
            cwd = msg.get("cwd") or "/home/user"
            if e.filename == cwd and e.errno in (errno_code("ENOENT"), errno_code("ENOTDIR"), errno_code("EACCES")):
                what = {"ENOENT": "does not exist", "ENOTDIR": "is not a directory"}.get(errno_name(e), "cannot be entered")
                reason = "the working directory %s %s (%s)" % (cwd, what, errno_name(e))
            else:
                reason = "%s: %s" % (errno_name(e), e.strerror or str(e))
            self.chan.send({"type": "exit", "id": mid, "exitCode": 127, "signal": None, "error": reason[:4000]})
            return
        self.procs[mid] = p
        if msg.get("background"):  # the host hands the caller a handle now; output and exit follow
            self.chan.send({"type": "started", "id": mid, "pid": p.pid})
        if isinstance(p, SpawnedProc):
            start_thread(self.watch, mid, p, oom_kills())
        else:
            pumps = [start_thread(self.pump, mid, s, pipe) for s, pipe in (("stdout", p.stdout), ("stderr", p.stderr))]
        if keep_stdin:
            self.stdin_feeds[mid] = StdinFeed(p.stdin)
            if stdin is not None:
                self.stdin_feeds[mid].put(b64decode(stdin))
        elif stdin is not None:
            def feed():
                try:
                    p.stdin.write(b64decode(stdin))
                    p.stdin.close()
                except (OSError, ValueError):
                    pass
            start_thread(feed)
        if not isinstance(p, SpawnedProc):
            start_thread(self.wait_exit, mid, p, pumps, oom_kills())

    def watch(self, mid, p, kills_before):
        """A spawner-started command's one thread (a forked one has three): its output from both
        pipes until they close, then its exit. Once it has exited, pipes a background child still
        holds are read for at most 0.2 s more, as wait_exit does."""
        import select
        poller = select.poll()
        streams = {p.stdout.fileno(): "stdout", p.stderr.fileno(): "stderr"}
        for fd in streams:
            poller.register(fd, select.POLLIN)
        wake_r, wake_w = os.pipe()
        poller.register(wake_r, select.POLLIN)
        p.when_exited(lambda: os.write(wake_w, b"x"))
        deadline = None
        while streams:
            timeout = None if deadline is None else max(0, deadline - time.monotonic()) * 1000
            events = poller.poll(timeout)
            if not events and deadline is not None:
                break
            for fd, _ in events:
                if fd == wake_r:
                    poller.unregister(wake_r)
                    deadline = time.monotonic() + 0.2
                    continue
                try:
                    data = os.read(fd, CHUNK)
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    del streams[fd]
                elif mid in self.procs:
                    self.chan.send({"type": "output", "id": mid, "stream": streams[fd], "data": b64(data)})
        rc = p.wait()
        os.close(wake_r)  # only now, the hook having run (on an error above they are left open)
        os.close(wake_w)
        self.exited(mid, p, rc, kills_before)

    def pump(self, mid, stream, pipe):
        fd = pipe.fileno()
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                return
            if not data or mid not in self.procs:
                return
            self.chan.send({"type": "output", "id": mid, "stream": stream, "data": b64(data)})

    def wait_exit(self, mid, p, pumps, kills_before):
        rc = p.wait()
        for t in pumps:  # output still in the pipes; a background child holding them is not waited for
            if t is not None:
                t.join(0.2)
        self.exited(mid, p, rc, kills_before)

    def exited(self, mid, p, rc, kills_before):
        self.procs.pop(mid, None)
        feed = self.stdin_feeds.pop(mid, None)
        if feed is not None:
            feed.close()
        sig = None
        if rc < 0:
            try:
                sig = signal.Signals(-rc).name
            except ValueError:
                sig = str(-rc)
            rc = 128 - rc
        done = {"type": "exit", "id": mid, "exitCode": rc, "signal": sig}
        if self.out_of_memory(p.pid, rc, kills_before):
            done["oomKilled"] = True
        self.chan.send(done)

    def out_of_memory(self, sid, rc, kills_before):
        """Whether the process group `sid` (a command's session, the REPL) ended for lack of
        memory: the watchdog killed one of its processes, or it ended with SIGKILL (itself, or
        a shell reporting its child's 128 + 9) while the kernel's OOM killer killed something."""
        if sid in self.memory_killed:
            self.memory_killed.discard(sid)
            return True
        if rc not in (-9, 137):
            return False
        now = oom_kills()
        return now is not None and kills_before is not None and now > kills_before

    def do_kill(self, msg):
        p = self.procs.get(msg.get("target"))
        if p is not None:
            sig = getattr(signal, "SIG" + msg.get("signal", "KILL"), signal.SIGKILL)
            start_thread(kill_session, p.pid, sig)
        self.chan.send({"type": "reply", "id": msg["id"], "ok": True})

    def do_stdin(self, msg):
        """Write to (`data`) or close (`close`) the open stdin of background command `target`."""
        feed = self.stdin_feeds.get(msg.get("target"))
        err = None
        if feed is None:
            err = "ENOENT"
        elif msg.get("close"):
            feed.close()
        else:
            try:
                data = b64decode(msg.get("data") or "")
            except (binascii.Error, ValueError):
                data = None
                err = "EINVAL"
            if data is not None:
                err = feed.put(data)
        if err is None:
            self.chan.send({"type": "reply", "id": msg["id"], "ok": True})
            return
        message = {
            "ENOENT": "the command is not running, or was not started with its stdin open",
            "EPIPE": "the command's stdin is closed",
            "EAGAIN": "the command is not reading its stdin: over %d bytes would be waiting" % STDIN_PENDING_MAX,
            "EINVAL": "the data is not base64",
        }[err]
        self.chan.send({"type": "reply", "id": msg["id"], "ok": False, "errno": err, "message": message})

    # ---- files ------------------------------------------------------------------------------
    def do_fs(self, msg):
        mid, op, path = msg["id"], msg.get("op"), msg.get("path", "")
        try:
            with AsGuest():
                reply = self.fs_op(mid, op, path, msg)
        except OSError as e:
            reply = {"type": "reply", "id": mid, "ok": False, "errno": errno_name(e), "message": e.strerror or str(e)}
        except ValueError as e:
            reply = {"type": "reply", "id": mid, "ok": False, "errno": "EINVAL", "message": str(e)}
        self.chan.send(reply)

    def fs_op(self, mid, op, path, msg):
        reply = {"type": "reply", "id": mid, "ok": True}
        if op == "write":
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            with open(path, "wb") as f:
                f.write(b64decode(msg.get("data", "")))
        elif op == "read":
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > MAX_FILE:
                    raise OSError(27, "file too large to read through the agent (over %d bytes)" % MAX_FILE)
                data = f.read(MAX_FILE + 1)
            if len(data) > MAX_FILE:
                raise OSError(27, "file too large to read through the agent")
            reply["data"] = b64(data)
        elif op == "list":
            entries = []
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "file"
                entries.append({"name": name, "path": full, "type": kind, "size": st.st_size if kind == "file" else 0})
            reply["entries"] = entries
        elif op == "remove":
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                import shutil  # only here: it imports bz2, lzma and re, slow to load in gVisor
                shutil.rmtree(path)
            else:
                os.unlink(path)
        elif op == "exists":
            reply["exists"] = os.path.lexists(path)
        elif op == "mkdir":
            os.makedirs(path, exist_ok=True)
        else:
            raise OSError(22, "unknown file operation")
        return reply

    def do_configure(self, msg):
        global PROCESS_MEMORY
        self.env.update(msg.get("env") or {})
        self.seed = msg.get("seed")
        limit = msg.get("processMemoryMb")
        if isinstance(limit, int) and limit > 0:
            PROCESS_MEMORY = limit << 20
        port = msg.get("proxyPort")
        if isinstance(port, int) and 0 < port < 65536:
            self.streams.listen(port)
        ca = msg.get("caPem")
        if isinstance(ca, str) and ca:
            write_ca_bundle(ca)
        watch = msg.get("watchdogMemoryMb")
        if isinstance(watch, int) and watch > 0 and self.watchdog is None:
            self.watchdog = MemoryWatchdog(self, watch << 20)
            start_thread(self.watchdog.loop)
        with self.repl_lock:
            if self.repl is not None:
                self.repl_send(self.repl, self.repl_config())
        self.chan.send({"type": "reply", "id": msg["id"], "ok": True})

    def serve(self, fd):
        if EARLY_REPL and "pid" in EARLY_REPL:
            self.adopt_early_repl(EARLY_REPL)  # starting in the background: the first run waits for it
        self.spawner.start(EARLY_SPAWNER)  # commands take the old path until it is ready
        self.chan.send({"type": "ready", "v": PROTOCOL_VERSION, "agent": "agentbox-agent", "python": sys.version.split()[0]})
        handlers = {
            "ping": lambda m: self.chan.send({"type": "pong", "id": m["id"]}),
            "exec": self.do_exec, "kill": self.do_kill, "stdin": self.do_stdin, "run": self.do_run, "interrupt": self.do_interrupt,
            "fs": self.do_fs, "configure": self.do_configure, "stream": self.streams.control,
        }
        reader = ChannelReader(fd)
        while True:
            if not reader.pending():
                self.streams.flush_acks()  # nothing more to handle without a read: send the acks now
            msg = reader.frame()
            if msg is None:
                break
            if isinstance(msg, tuple):
                self.streams.data(*msg)
                continue
            h = handlers.get(msg.get("type"))
            if h is None:
                continue
            try:
                h(msg)
            except Exception as e:  # e.g. no process or thread left to start: answer, stay up
                kind = msg.get("type")
                reason = "%s: %s" % (type(e).__name__, e)
                if kind == "exec":
                    self.procs.pop(msg.get("id"), None)
                    self.chan.send({"type": "exit", "id": msg["id"], "exitCode": 126, "signal": None, "error": reason[:4000]})
                elif kind == "run":
                    self.repl_run = None
                    self.chan.send({"type": "result", "id": msg["id"], "value": None, "error": {"name": "AgentError", "message": reason[:60000], "traceback": ""}, "durationMs": 0})
                elif kind in ("fs", "configure", "kill", "stdin"):
                    self.chan.send({"type": "reply", "id": msg["id"], "ok": False, "errno": "EAGAIN", "message": reason[:60000]})
        for p in list(self.procs.values()):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass


def write_ca_bundle(ca):
    """The CA bundle the guest's TLS clients are pointed at (the host's caEnv): the system's
    certificates and the sandbox's CA, which signs the host's interception of secrets' hosts.
    Owned by root in a root-owned directory: guest code cannot swap what its tools trust."""
    d = "/tmp/.agentbox"
    os.makedirs(d, mode=0o755, exist_ok=True)
    os.chmod(d, 0o755)
    system = b""
    try:
        with open("/etc/ssl/certs/ca-certificates.crt", "rb") as f:
            system = f.read()
    except OSError:
        pass
    for name, data in (("sandbox-ca.pem", ca.encode()), ("ca-bundle.pem", system + b"\n" + ca.encode())):
        tmp = os.path.join(d, "." + name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(d, name))


def loopback_up():
    """Bring the loopback interface up where it is down and the agent may (the microVM's init
    does it first; gVisor's is up)."""
    import fcntl
    import socket
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
            if not flags & IFF_UP:
                fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    except OSError:
        pass


class Streams:
    """The byte streams this agent carries over its channel: each connection to its egress proxy
    (opened here, odd ids) and each connection the host makes to a guest port (even ids)."""

    def __init__(self, chan):
        self.chan = chan
        self.lock = threading.Lock()
        self.streams = {}
        self.next_id = -1
        self.proxy_port = None
        # Acks for data the channel thread wrote to a stream's socket, by stream: sent together,
        # in one write, when the channel has nothing more buffered (or a stream's reach ACK_BATCH).
        # Only the channel thread touches it.
        self.acks = {}

    def ack(self, sid, n):
        total = self.acks.get(sid, 0) + n
        self.acks[sid] = total
        if total >= ACK_BATCH:
            self.flush_acks()

    def flush_acks(self):
        if not self.acks:
            return
        frames = []
        for sid, n in self.acks.items():
            body = json_dumps({"type": "stream", "op": "ack", "stream": sid, "bytes": n}).encode()
            frames.append(struct.pack(">I", len(body)) + body)
        self.acks.clear()
        self.chan.write(b"".join(frames))

    def listen(self, port):
        """Accept connections on the loopback's `port` and hand each to the host. Idempotent."""
        import socket
        if self.proxy_port == port:
            return
        loopback_up()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(128)
        self.proxy_port = port
        start_thread(self.accept_loop, srv)

    def accept_loop(self, srv):
        while True:
            try:
                sock, _ = srv.accept()
            except OSError:
                time.sleep(0.05)
                continue
            with self.lock:
                self.next_id = (self.next_id + 2) % (1 << 32)
                sid = self.next_id
                s = self.streams[sid] = GuestStream(self, sid, sock)
            self.chan.send({"type": "stream", "op": "open", "stream": sid, "kind": "proxy"})
            s.start()

    def connect(self, sid, port):
        import socket
        try:
            loopback_up()
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.settimeout(None)
        except OSError as e:
            self.chan.send({"type": "stream", "op": "close", "stream": sid, "error": ("%s: %s" % (errno_name(e), e.strerror or e))[:1000]})
            return
        with self.lock:
            s = self.streams[sid] = GuestStream(self, sid, sock)
        self.chan.send({"type": "stream", "op": "opened", "stream": sid})
        s.start()

    def control(self, msg):
        op, sid = msg.get("op"), msg.get("stream")
        if op == "connect":
            port = msg.get("port")
            if isinstance(port, int) and 0 < port < 65536:
                start_thread(self.connect, sid, port)
            return
        s = self.streams.get(sid)
        if s is None:
            return
        if op == "ack":
            s.credit(int(msg.get("bytes") or 0))
        elif op == "end":
            s.host_end()
        elif op == "close":
            s.close(tell=False)

    def data(self, sid, data):
        s = self.streams.get(sid)
        if s is not None:
            s.queue_data(data)

    def forget(self, sid):
        with self.lock:
            self.streams.pop(sid, None)


class GuestStream:
    """One stream: a reader thread (guest socket -> host, within the host's window) and a writer
    thread (host -> guest socket, acknowledging what it wrote)."""

    def __init__(self, owner, sid, sock):
        import collections
        self.owner, self.sid, self.sock = owner, sid, sock
        self.chan = owner.chan
        self.cond = threading.Condition()
        self.window = STREAM_WINDOW
        self.queue = collections.deque()
        self.host_ended = False
        self.closed = False
        self.read_done = False
        self.write_done = False
        self.busy = False

    def start(self):
        start_thread(self.reader)
        start_thread(self.writer)

    def reader(self):
        # One buffer for the stream's life, with room for the frame's head in front of the data:
        # a whole read goes out as one frame without a copy or fresh memory (dear under gVisor).
        buf = bytearray(8 + STREAM_CHUNK)
        frame = memoryview(buf)
        while True:
            try:
                got = self.sock.recv_into(frame[8:])
            except OSError as e:
                return self.close(error=errno_name(e))
            if not got:
                break
            off = 0
            while off < got:
                with self.cond:
                    while self.window <= 0 and not self.closed:
                        self.cond.wait()
                    if self.closed:
                        return
                    n = min(got - off, self.window)
                    self.window -= n
                if off == 0 and n == got:
                    struct.pack_into(">II", buf, 0, BINARY | (4 + n), self.sid)
                    self.chan.write(frame[:8 + n])
                else:
                    self.chan.send_data(self.sid, bytes(frame[8 + off:8 + off + n]))
                off += n
        with self.cond:
            if self.closed:
                return
            self.read_done = True
        self.chan.send({"type": "stream", "op": "end", "stream": self.sid})
        self.finish_if_done()

    def writer(self):
        import socket
        while True:
            with self.cond:
                while not self.queue and not self.closed and not self.host_ended:
                    self.cond.wait()
                if self.closed:
                    return
                if not self.queue:
                    break
                data = self.queue.popleft()
                self.busy = True  # data in hand: queue_data must not send past it
            try:
                self.sock.sendall(data)
            except OSError as e:
                return self.close(error=errno_name(e))
            finally:
                with self.cond:
                    self.busy = False
            self.chan.send({"type": "stream", "op": "ack", "stream": self.sid, "bytes": len(data)})
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self.cond:
            self.write_done = True
        self.finish_if_done()

    def finish_if_done(self):
        with self.cond:
            done = self.read_done and self.write_done
        if done:
            self.close()

    def queue_data(self, data):
        import socket
        with self.cond:
            if self.closed or self.host_ended:
                return
            if not self.queue and not self.busy:
                # The common case, the reader keeping up: send what the socket takes now, from
                # this (the channel's) thread, without waking the writer; it sends the rest.
                try:
                    n = self.sock.send(data, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    n = 0  # the writer meets the error and closes the stream
                if n:
                    self.owner.ack(self.sid, n)
                    data = data[n:]
                if not data:
                    return
            self.queue.append(bytes(data))  # `data` may be a view into the channel's buffer
            self.cond.notify_all()

    def credit(self, n):
        with self.cond:
            self.window = min(STREAM_WINDOW, self.window + max(0, n))
            self.cond.notify_all()

    def host_end(self):
        with self.cond:
            self.host_ended = True
            self.cond.notify_all()

    def close(self, tell=True, error=None):
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify_all()
        import socket
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the other thread's blocked recv or send
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.owner.forget(self.sid)
        if tell:
            msg = {"type": "stream", "op": "close", "stream": self.sid}
            if error:
                msg["error"] = error
            self.chan.send(msg)


class Forked:
    """The forked REPL, with the part of Popen's interface the agent uses."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                done, status = self.pid, 0
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass

    def send_signal(self, sig):
        os.kill(self.pid, sig)


class Digester:
    """SHA-256 over the sandbox's writable tree (DIGEST_ROOTS): paths in code-point order, type,
    permission bits, file contents and link targets; never times or owners. File hashes are
    cached by (device, inode, size, mtime, ctime), so a run that changed little costs little.
    Runs with the agent's own (root, no DAC override) credentials: what it cannot read is
    recorded as such, which is just as deterministic."""

    def __init__(self):
        self.cache = {}

    def digest(self):
        import hashlib
        h = hashlib.sha256()
        seen = {}
        for root in DIGEST_ROOTS:
            self.walk(root, h, seen)
        self.cache = seen
        return h.hexdigest()

    def walk(self, path, h, seen):
        try:
            st = os.lstat(path)
        except OSError:
            h.update(("? %s\n" % json_dumps(path)).encode())
            return
        perm = "%o" % stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode) and path not in DIGEST_ROOTS and os.path.ismount(path):
            h.update(("m %s\n" % json_dumps(path)).encode())  # a host mount: listed, not descended
        elif stat.S_ISDIR(st.st_mode):
            h.update(("d %s %s\n" % (json_dumps(path), perm)).encode())
            try:
                names = sorted(os.listdir(path))
            except OSError:
                h.update(b"unlistable\n")
                return
            for name in names:
                self.walk(path + "/" + name, h, seen)
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            h.update(("l %s %s\n" % (json_dumps(path), json_dumps(target))).encode())
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            content = self.cache.get(key)
            if content is None:
                content = self.hash_file(path)
            if content != "unreadable":
                seen[key] = content
            h.update(("f %s %s %s\n" % (json_dumps(path), perm, content)).encode())
        else:
            h.update(("o %s %s\n" % (json_dumps(path), perm)).encode())

    @staticmethod
    def hash_file(path):
        import hashlib
        fh = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    fh.update(b)
        except OSError:
            return "unreadable"
        return fh.hexdigest()


def start_thread(target, *args):
    """Start a daemon thread; under a fork bomb (RLIMIT_NPROC counts threads) retry for a
    while, then run the work inline rather than let the agent die."""
    for _ in range(100):
        try:
            t = threading.Thread(target=target, args=args, daemon=True)
            t.start()
            return t
        except RuntimeError:
            time.sleep(0.02)
    target(*args)
    return None


def kill_session(sid, sig):
    """Signal every process of a command's session, again until none is left (a fork bomb
    keeps forking while it is being killed; only setsid() leaves the session)."""
    for _ in range(200):
        found = False
        try:
            os.killpg(sid, sig)
        except OSError:
            pass
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session
                    found = True
                    os.kill(int(name), sig)
            except (OSError, ValueError, IndexError):
                pass
        if not found or sig != signal.SIGKILL:
            return
        time.sleep(0.01)


def oom_kills():
    """How many processes the guest kernel's OOM killer has ended so far, or None where the
    kernel does not say (gVisor)."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def wait_briefly(proc):
    """The exit status of a child whose pipes just closed (negative: the signal), or None."""
    for _ in range(50):
        rc = proc.poll()
        if rc is not None:
            return rc
        time.sleep(0.01)
    return None


class MemoryWatchdog:
    """Where the sandbox's memory limit is a wall the whole sandbox dies at (gVisor: the host's
    memory cgroup OOM-kills every process of the sandbox, the agent included), watch the
    sandbox's memory use (its processes', not its tmpfs files') and SIGKILL the largest guest
    process when it passes the limit, before the wall (set above it) is reached.
    RLIMIT_AS stops one greedy process; this stops several together. The host's cgroup stays
    the outer wall for what is faster than this poll."""

    def __init__(self, agent, limit_bytes):
        self.agent = agent
        self.limit = limit_bytes

    @staticmethod
    def used():
        values = {}
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                name, _, rest = line.partition(b":")
                if name in (b"MemTotal", b"MemAvailable", b"Shmem"):
                    values[name] = int(rest.split()[0]) << 10
        # Files in the tmpfs scratch (Shmem) are the sandbox's disk, capped by their own size; no
        # process holds them, so killing one would not give them back.
        return values[b"MemTotal"] - values[b"MemAvailable"] - values.get(b"Shmem", 0)

    def loop(self):
        while True:
            busy = self.agent.procs or self.agent.repl_run is not None
            time.sleep(0.01 if busy else 0.2)
            try:
                if self.used() > self.limit and self.kill_largest():
                    time.sleep(0.1)  # let the sandbox take back what the victim held
            except (OSError, ValueError, KeyError):
                pass

    def kill_largest(self):
        best = None
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                rss, sid = int(fields[21]), int(fields[3])  # fields after the name: state ppid pgrp session ... rss
            except (OSError, ValueError, IndexError):
                continue
            if rss > 0 and (best is None or rss > best[0]):
                best = (rss, int(name), sid)
        if best is None:
            return False
        self.agent.memory_killed.add(best[2])
        try:
            os.kill(best[1], signal.SIGKILL)
        except OSError:
            return False
        return True


def errno_code(name):
    import errno as errno_mod
    return getattr(errno_mod, name)


def errno_name(e):
    import errno as errno_mod
    return errno_mod.errorcode.get(e.errno or 0, "EIO")


def main():
    global PRIVILEGED
    if "--repl" in sys.argv:
        return repl_main()
    if "--spawner" in sys.argv:
        return spawner_main()
    if EARLY_REPL and "child" in EARLY_REPL:
        try:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as the agent's children have it
            repl_main(EARLY_REPL["child"])
        finally:
            os._exit(0)
    if os.getuid() == 0:
        PRIVILEGED = True
        os.setgroups([])
    # The channel is the original stdin/stdout; stray writes to fd 1 must not corrupt it.
    chan_in, chan_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    Agent(Channel(chan_out)).serve(chan_in)


if __name__ == "__main__":
    main()
