#!/usr/bin/python3
# agentbox microVM supervisor: PID 1 inside the guest's real root (started by the initramfs
# init through switch_root), running as root. It
#   - opens the two virtio-serial ports once (a port allows one open at a time),
#   - starts the guest agent (/opt/agentbox/agent.py) as root with only CAP_SETUID/SETGID/KILL
#     and no_new_privs (the agent runs every child as the unprivileged user), with the agent port
#     as its stdin and stdout and rlimits against fork bombs (the process limit is the host's,
#     given on the kernel command line as agentbox.max_processes),
#   - serves the control port: after a snapshot restore the host sends fresh entropy and the
#     current time, which only root can apply (RNDRESEEDCRNG, clock_settime),
#   - keeps itself and the agent out of the guest kernel's OOM killer's reach (oom_score_adj
#     -1000; the agent puts every child back to 0), so running out of RAM ends guest code only,
#   - reaps orphans, and reboots the VM (QEMU runs with -no-reboot, so it exits) when the agent
#     ends, so a dead agent never leaves a VM idling.
# Control frames are the project's framing: a 4-byte big-endian length, then UTF-8 JSON.
import base64
import fcntl
import json
import os
import resource
import select
import signal
import struct
import socket
import time

AGENT = "/opt/agentbox/agent.py"
GUEST_UID = 1000
MAX_CTL_FRAME = 64 << 10
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])


def log(msg):
    try:
        with open("/dev/console", "w") as c:
            c.write("agentbox-init: %s\n" % msg)
    except OSError:
        pass


def reboot():
    try:
        with open("/proc/sysrq-trigger", "w") as f:
            f.write("b")
    except OSError:
        pass
    os._exit(1)


def find_port(name):
    base = "/sys/class/virtio-ports"
    for _ in range(500):
        try:
            for d in sorted(os.listdir(base)):
                try:
                    with open(os.path.join(base, d, "name")) as f:
                        if f.read().strip() == name:
                            return "/dev/" + d
                except OSError:
                    pass
        except OSError:
            pass
        time.sleep(0.01)
    log("no virtio port named %s" % name)
    reboot()


def max_processes():
    """The guest's process limit, from the host (kernel command line agentbox.max_processes=N)."""
    with open("/proc/cmdline") as f:
        for arg in f.read().split():
            if arg.startswith("agentbox.max_processes="):
                n = int(arg.split("=", 1)[1])
                if n > 0:
                    return n
    raise ValueError("no agentbox.max_processes on the kernel command line")


CAP_KILL, CAP_SETGID, CAP_SETUID = 5, 6, 7
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38


def restrict_capabilities():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        if cap in (CAP_KILL, CAP_SETGID, CAP_SETUID):
            continue
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: past the last cap
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP %d" % cap)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")


def protect_from_oom_killer():
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")


def start_agent(port_fd):
    nproc = max_processes()  # before the fork: without it, no agent (and the VM reboots)
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        os.dup2(port_fd, 0)
        os.dup2(port_fd, 1)
        for fd in range(3, 256):
            try:
                os.close(fd)
            except OSError:
                pass
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        protect_from_oom_killer()
        # The agent stays root, as on gVisor, with the same narrow powers: a bounding set of only
        # CAP_SETUID, CAP_SETGID and CAP_KILL (what it keeps after exec) and no_new_privs (no
        # setuid binary gives anything back). It runs every child as GUEST_UID, so guest code can
        # neither signal nor ptrace the agent.
        restrict_capabilities()
        os.chdir("/home/user")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/user", "LANG": "C.UTF-8", "USER": "user"}
        os.execve("/usr/bin/python3", ["python3", "-I", "-S", AGENT], env)
    except BaseException as e:  # noqa: BLE001 - the child must never return into the supervisor
        log("cannot start the agent: %r" % (e,))
    os._exit(127)


def send(fd, msg):
    body = json.dumps(msg, separators=(",", ":")).encode()
    data = struct.pack(">I", len(body)) + body
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def refresh(msg):
    """Fresh entropy and the host's clock for a VM restored from a snapshot (clones must differ)."""
    entropy = base64.b64decode(msg.get("entropy", ""))
    if len(entropy) < 32:
        raise ValueError("too little entropy")
    with open("/dev/urandom", "wb", buffering=0) as f:
        # Mix the bytes in and credit them, then force the CRNG to reseed from the pool now
        # instead of at its next periodic reseed (up to a minute later).
        fcntl.ioctl(f, RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy)
        fcntl.ioctl(f, RNDRESEEDCRNG)
    t = msg.get("timeMs")
    if isinstance(t, (int, float)) and t > 0:
        time.clock_settime(time.CLOCK_REALTIME, t / 1000.0)


def serve_control(fd, msg):
    mid = msg.get("id")
    kind = msg.get("type")
    try:
        if kind == "ping":
            send(fd, {"type": "pong", "id": mid})
        elif kind == "refresh":
            refresh(msg)
            send(fd, {"type": "ok", "id": mid})
        else:
            send(fd, {"type": "error", "id": mid, "message": "unknown request"})
    except (OSError, ValueError) as e:
        send(fd, {"type": "error", "id": mid, "message": str(e)[:200]})


def loopback_up():
    """Bring `lo` up: the kernel starts with it down and the agent lacks CAP_NET_ADMIN. The host's
    connections to guest ports and the egress proxy both run over 127.0.0.1 (no other interface)."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0)))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def main():
    try:
        socket.sethostname("sandbox")
    except OSError:
        pass
    try:
        loopback_up()
    except OSError as e:
        log("cannot bring the loopback interface up: %r" % (e,))
    try:
        protect_from_oom_killer()
    except OSError as e:
        log("cannot set the supervisor's oom_score_adj: %r" % (e,))
    agent_fd = os.open(find_port("agentbox.agent"), os.O_RDWR | os.O_CLOEXEC)
    ctl_fd = os.open(find_port("agentbox.ctl"), os.O_RDWR | os.O_CLOEXEC)
    os.set_inheritable(agent_fd, True)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    agent = start_agent(agent_fd)
    os.close(agent_fd)
    buf = b""
    while True:
        try:
            ready, _, _ = select.select([ctl_fd, wake_r], [], [])
        except InterruptedError:
            ready = []
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except OSError:
                pass
        while True:  # reap every exited child, orphans included
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == agent:
                log("the agent exited (status %d); rebooting" % status)
                reboot()
        if ctl_fd in ready:
            data = os.read(ctl_fd, 65536)
            if not data:
                time.sleep(0.05)  # the host side is not connected
                continue
            buf += data
            while len(buf) >= 4:
                (n,) = struct.unpack(">I", buf[:4])
                if n > MAX_CTL_FRAME:
                    buf = b""
                    break
                if len(buf) < 4 + n:
                    break
                body, buf = buf[4:4 + n], buf[4 + n:]
                try:
                    msg = json.loads(body)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    serve_control(ctl_fd, msg)


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - PID 1 must not just die
        log("supervisor failed: %r" % (e,))
        reboot()
