"""Tests of the Python client against a real agentbox server.

The server is $AGENTBOX_TEST_URL with keys $AGENTBOX_TEST_KEY and $AGENTBOX_TEST_KEY2 (how
`npm test` runs these, through test/integration/python-client.test.ts), started with
`--allow-net 127.0.0.1:P --allow-net localhost:P` for an HTTP server on 127.0.0.1:P
($AGENTBOX_TEST_NET_PORT) that answers "hi". Without them, the tests start that HTTP server and
`node bin/agentbox.js serve --port 0` from this repository themselves (needs `npm run build`).

    cd clients/python && python3 -m unittest -v
"""

from __future__ import annotations

import builtins
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar, List, Optional, Tuple
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentbox_client import (  # noqa: E402
    AgentboxError,
    AuthenticationError,
    CommandHandle,
    DisplayResult,
    ExposedPort,
    FileSystemError,
    InvalidOptionsError,
    NotFoundError,
    NetworkLogEntry,
    NotTextError,
    QuotaExceededError,
    RequestTimeoutError,
    Sandbox,
    SandboxClosedError,
    TierUnavailableError,
    TimeoutError,
)

URL = ""
KEY = ""
KEY2 = ""
NET_PORT = 0
_server: Optional[subprocess.Popen[bytes]] = None
_net: Optional[http.server.ThreadingHTTPServer] = None


class _Hi(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"hi")

    def log_message(self, format: str, *args: object) -> None:
        pass


def setUpModule() -> None:
    global URL, KEY, KEY2, NET_PORT, _server, _net
    if os.environ.get("AGENTBOX_TEST_URL"):
        URL, KEY, KEY2 = os.environ["AGENTBOX_TEST_URL"], os.environ["AGENTBOX_TEST_KEY"], os.environ["AGENTBOX_TEST_KEY2"]
        NET_PORT = int(os.environ["AGENTBOX_TEST_NET_PORT"])
        return
    _net = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hi)
    NET_PORT = _net.server_address[1]
    threading.Thread(target=_net.serve_forever, daemon=True).start()
    KEY, KEY2 = "py-client-key-one-0123456789", "py-client-key-two-0123456789"
    keys = {"keys": [{"name": "one", "key": KEY, "maxSandboxes": 4, "maxRunMs": 60000}, {"name": "two", "key": KEY2, "maxSandboxes": 1}]}
    repo = Path(__file__).resolve().parents[3]
    _server = subprocess.Popen(
        ["node", str(repo / "bin" / "agentbox.js"), "serve", "--port", "0", "--pool", "1", "--allow-net", f"127.0.0.1:{NET_PORT}", "--allow-net", f"localhost:{NET_PORT}"],
        env={**os.environ, "AGENTBOX_API_KEYS": json.dumps(keys)},
        stdout=subprocess.PIPE,
    )
    assert _server.stdout is not None
    line = _server.stdout.readline().decode()
    m = re.search(r"listening on (http://\S+)", line)
    if not m:
        raise RuntimeError(f"server did not start: {line!r}")
    URL = m.group(1)


def tearDownModule() -> None:
    if _server is not None:
        _server.terminate()
        _server.wait(timeout=30)
    if _net is not None:
        _net.shutdown()
        _net.server_close()


def create(**kw: object) -> Sandbox:
    return Sandbox.create(base_url=URL, api_key=KEY, **kw)  # type: ignore[arg-type]


class RunTests(unittest.TestCase):
    def test_run_code_keeps_state_and_returns_value_and_seed(self) -> None:
        with create(seed=7, limits={"memoryMb": 128}) as sb:
            self.assertTrue(sb.id.startswith("sb_"))
            self.assertEqual(sb.seed, 7)
            self.assertEqual(sb.info.limits["memoryMb"], 128)
            r = sb.run_code("x = 41\nprint('hi')")
            self.assertEqual(r.stdout, "hi\n")
            self.assertEqual(r.exit_code, 0)
            self.assertIsNone(r.value)
            r = sb.run_code("x + 1")
            self.assertEqual(r.value, "42")
            self.assertEqual(r.seed, 7)
            self.assertRegex(r.vfs_digest, r"^[0-9a-f]{64}$")

    def test_rich_results(self) -> None:
        with create() as sb:
            r = sb.run_code("class P:\n    def _repr_png_(self): return b'\\x89PNG'\n    def _repr_html_(self): return '<b>p</b>'\ndisplay('hi')\nP()")
            self.assertEqual([x.main for x in r.results], [False, True])
            self.assertEqual(r.results[0].text, "'hi'")
            self.assertIsNone(r.results[0].png)
            self.assertEqual(r.results[1].png, b"\x89PNG")
            self.assertEqual(r.results[1].html, "<b>p</b>")
            self.assertEqual(sb.run_code("1").results, ())

    def test_guest_exception_is_a_result(self) -> None:
        with create() as sb:
            r = sb.run_code("raise ValueError('nope')")
            self.assertEqual(r.exit_code, 1)
            assert r.error is not None
            self.assertEqual(r.error.name, "ValueError")
            self.assertIn("nope", r.error.traceback)

    def test_streaming_callbacks_get_chunks_while_the_run_goes_on(self) -> None:
        chunks: List[Tuple[str, str, float]] = []
        with create(clock="real") as sb:
            t0 = time.monotonic()
            r = sb.run_code(
                "import sys, time\nprint('first')\ntime.sleep(0.3)\nprint('oops', file=sys.stderr)\ntime.sleep(0.6)\nprint('last')\n'done'",
                on_stdout=lambda s: chunks.append(("out", s, time.monotonic() - t0)),
                on_stderr=lambda s: chunks.append(("err", s, time.monotonic() - t0)),
            )
            finished = time.monotonic() - t0
        self.assertEqual(r.value, "'done'")
        self.assertEqual("".join(c[1] for c in chunks if c[0] == "out"), r.stdout)
        self.assertEqual("".join(c[1] for c in chunks if c[0] == "err"), "oops\n")
        self.assertEqual(chunks[0][1], "first\n")
        self.assertGreater(finished - chunks[0][2], 0.4, "the first chunk came with the result, not before it")

    def test_on_result_gets_each_rich_result_while_the_run_goes_on(self) -> None:
        seen: List[Tuple[DisplayResult, float]] = []
        with create(clock="real") as sb:
            t0 = time.monotonic()
            r = sb.run_code(
                "import time\nclass P:\n    def _repr_png_(self): return b'\\x89PNG'\ndisplay('<b>x</b>')\ntime.sleep(0.8)\nP()",
                on_result=lambda d: seen.append((d, time.monotonic() - t0)),
            )
            finished = time.monotonic() - t0
        self.assertEqual([d for d, _ in seen], list(r.results))
        self.assertEqual([d.main for d, _ in seen], [False, True])
        self.assertEqual(seen[0][0].text, "'<b>x</b>'")
        self.assertEqual(seen[1][0].png, b"\x89PNG")
        self.assertGreater(finished - seen[0][1], 0.5, "the first result came with the run's end, not while it slept")

    def test_limits_soft_timeout_is_a_result_hard_timeout_raises_and_closes(self) -> None:
        with create(limits={"timeoutMs": 300, "graceMs": 100}) as sb:
            self.assertEqual(sb.run_code("while True: pass").limit_hit, "timeoutMs")
            with self.assertRaises(TimeoutError) as cm:
                sb.run_code("print('before', flush=True)\nwhile True:\n    try:\n        while True: pass\n    except BaseException:\n        pass")
            self.assertIsInstance(cm.exception, builtins.TimeoutError)
            self.assertEqual(cm.exception.limit, "timeoutMs")
            self.assertEqual(cm.exception.status, 422)
            # What the run printed before the worker was killed comes back on the error.
            self.assertEqual(cm.exception.result, {"stdout": "before\n", "stderr": "", "exitCode": 137, "limitHit": "timeoutMs"})
            with self.assertRaises(SandboxClosedError):
                sb.run_code("1")
            self.assertEqual(sb.refresh().status, "closed")


class ClientTimeoutTests(unittest.TestCase):
    def test_the_client_waits_for_the_runs_own_limit(self) -> None:
        with create(limits={"timeoutMs": 50_000, "graceMs": 500}) as sb:
            self.assertEqual(sb._run_wait_s(None), 50.5 + 30)
            self.assertEqual(sb._run_wait_s(200_000), 200.5 + 30)  # longer than timeout_s (120 s)
            self.assertIsInstance(sb.info.limits["memoryMb"], int)
            self.assertNotIn("cpus", sb.info.limits)  # a heavy-tier limit: a nano sandbox has none

    def test_a_client_that_gives_up_raises_its_own_error_and_stops_the_run(self) -> None:
        with create(limits={"timeoutMs": 30_000}) as sb:
            sb.run_code("x = 41")
            for stream in (False, True):
                t0 = time.monotonic()
                # Pretend the margin is negative: the client gives up ~2 s into a 20 s run.
                with mock.patch("agentbox_client.sandbox.RUN_TIMEOUT_MARGIN_S", -18.5):
                    with self.assertRaises(RequestTimeoutError) as cm:
                        sb.run_code("while True: pass", timeout_ms=20_000, on_stdout=(lambda s: None) if stream else None)
                self.assertIsInstance(cm.exception, AgentboxError)
                self.assertIsInstance(cm.exception, builtins.TimeoutError)
                self.assertEqual(cm.exception.code, "CLIENT_TIMEOUT")
                self.assertEqual(sb.run_code("x + 1").value, "42")
                self.assertLess(time.monotonic() - t0, 10, "the abandoned run went on in the server")
            self.assertEqual(len(Sandbox.list(base_url=URL, api_key=KEY, timeout_s=5)), 1)


class FilesTests(unittest.TestCase):
    def test_binary_round_trip_list_exists_remove(self) -> None:
        with create() as sb:
            data = bytes(range(256))
            sb.files.write("/data/all.bin", data)
            self.assertEqual(sb.files.read("/data/all.bin", format="bytes"), data)
            sb.files.write("/data/t.txt", "héllo")
            self.assertEqual(sb.files.read("/data/t.txt"), "héllo")
            sb.files.make_dir("/data/sub")
            self.assertEqual([(e.name, e.type) for e in sb.files.list("/data")], [("all.bin", "file"), ("sub", "dir"), ("t.txt", "file")])
            self.assertEqual(sb.run_code("open('/data/all.bin','rb').read() == bytes(range(256))").value, "True")
            self.assertTrue(sb.files.exists("/data/t.txt"))
            sb.files.remove("/data/t.txt")
            self.assertFalse(sb.files.exists("/data/t.txt"))
            with self.assertRaises(FileSystemError) as cm:
                sb.files.read("/data/t.txt")
            self.assertEqual(cm.exception.errno, "ENOENT")
            self.assertEqual(cm.exception.status, 404)
            with self.assertRaises(InvalidOptionsError):
                sb.files.read("/../etc/passwd")
            sb.files.write("/data/bin", b"\xff\xfe\x00")
            with self.assertRaises(NotTextError) as nt:
                sb.files.read("/data/bin")
            self.assertIn('format="bytes"', nt.exception.message)


class DataAnalysisTests(unittest.TestCase):
    """A CSV analysed with pandas and matplotlib on the data image; runs where the test harness
    built that image (AGENTBOX_TEST_DATA_IMAGE=1), else skips with the reason."""

    def test_chart_and_table_from_a_csv(self) -> None:
        if os.environ.get("AGENTBOX_TEST_DATA_IMAGE") != "1":
            self.skipTest("the data image is not built for this run (AGENTBOX_TEST_DATA_IMAGE=1 says it is)")
        with create(tier="heavy", image="data", limits={"memoryMb": 512, "timeoutMs": 60000}) as sb:
            sb.files.write("/home/user/t.csv", "x,y\n1,2\n2,4\n3,9\n")
            r = sb.run_code(
                "import pandas as pd, matplotlib.pyplot as plt\n"
                "df = pd.read_csv('/home/user/t.csv')\n"
                "df.plot(x='x', y='y')\n"
                "df.describe()\n"
            )
            self.assertIsNone(r.error)
            tables = [x for x in r.results if x.html]
            charts = [x for x in r.results if x.png]
            self.assertEqual(len(tables), 1)
            self.assertTrue(tables[0].main)
            self.assertIn("<table", tables[0].html or "")
            self.assertEqual(len(charts), 1)
            png = charts[0].png or b""
            self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(png[12:16], b"IHDR")
            self.assertEqual(png[-8:-4], b"IEND")


class CommandsTests(unittest.TestCase):
    """commands.run on one heavy-tier sandbox; skipped (reason printed) where the server has no heavy tier."""

    sb: ClassVar[Sandbox]

    @classmethod
    def setUpClass(cls) -> None:
        try:
            cls.sb = create(tier="heavy", limits={"memoryMb": 256})
        except TierUnavailableError as e:
            raise unittest.SkipTest(f"the server reports the heavy tier unavailable: {e}") from None

    @classmethod
    def tearDownClass(cls) -> None:
        cls.sb.kill()

    def test_info_limits_of_the_heavy_tier(self) -> None:
        limits = self.sb.info.limits
        self.assertIsInstance(limits["cpus"], float)
        self.assertIsInstance(limits["diskMb"], int)
        self.assertNotIn("vfsBytes", limits)  # a nano-tier limit

    def test_exit_code_and_output(self) -> None:
        r = self.sb.commands.run("echo hi | tr a-z A-Z; echo oops >&2; exit 3")
        self.assertEqual((r.exit_code, r.stdout, r.stderr, r.limit_hit), (3, "HI\n", "oops\n", None))
        self.assertGreater(r.duration_ms, 0)
        self.assertEqual(self.sb.info.tier, "heavy")

    def test_argv_cwd_env_stdin_and_shared_files(self) -> None:
        r = self.sb.commands.run(["sh", "-c", 'printf "%s|%s|" "$(pwd)" "$X"; wc -c'], cwd="/tmp", env={"X": "x1"}, stdin=bytes([0, 1, 255]))
        self.assertEqual(r.stdout.split(), ["/tmp|x1|3"])
        self.assertEqual(self.sb.commands.run("cat", stdin="héllo").stdout, "héllo")
        self.sb.files.write("/home/user/n.txt", "41")
        self.assertEqual(self.sb.commands.run("python3 -c 'print(int(open(\"n.txt\").read()) + 1)'").stdout, "42\n")

    def test_streaming_callbacks_get_chunks_while_the_command_runs(self) -> None:
        chunks: List[Tuple[str, str, float]] = []
        t0 = time.monotonic()
        r = self.sb.commands.run(
            "echo first; sleep 0.6; echo err >&2; echo last",
            on_stdout=lambda s: chunks.append(("out", s, time.monotonic() - t0)),
            on_stderr=lambda s: chunks.append(("err", s, time.monotonic() - t0)),
        )
        finished = time.monotonic() - t0
        self.assertEqual(r.exit_code, 0)
        self.assertEqual("".join(c[1] for c in chunks if c[0] == "out"), r.stdout)
        self.assertEqual("".join(c[1] for c in chunks if c[0] == "err"), "err\n")
        self.assertEqual(chunks[0][1], "first\n")
        self.assertGreater(finished - chunks[0][2], 0.4, "the first chunk came with the result, not before it")

    def test_ports_expose_a_guest_server_through_the_proxy(self) -> None:
        launch = "import subprocess, sys; subprocess.Popen(sys.argv[1:], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
        self.sb.files.write("/tmp/www/hi.txt", "hi from the sandbox")
        self.sb.commands.run(["python3", "-c", launch, "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/tmp/www"])
        url = self.sb.ports.expose(8000)
        self.assertEqual(url, f"{URL}/sandboxes/{self.sb.id}/ports/8000/")
        self.assertEqual(self.sb.ports.expose(8000), url)
        self.assertEqual(self.sb.ports.list(), [ExposedPort(port=8000, url=url)])
        body = b""
        for _ in range(100):  # until the server in the sandbox listens (502 before)
            try:
                with urllib.request.urlopen(urllib.request.Request(url + "hi.txt", headers=self.sb.ports.headers()), timeout=10) as resp:
                    body = resp.read()
                break
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, 502)
                time.sleep(0.1)
        self.assertEqual(body, b"hi from the sandbox")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(url + "hi.txt", timeout=10)  # no API key
        self.assertEqual(cm.exception.code, 401)
        self.sb.ports.close(8000)
        self.assertEqual(self.sb.ports.list(), [])
        with self.assertRaises(TierUnavailableError):
            with create(language="javascript") as nano:
                nano.ports.expose(8000)

    def test_timeout_kills_the_command_and_the_sandbox_lives_on(self) -> None:
        r = self.sb.commands.run("echo before; sleep 30", timeout_ms=400)
        self.assertEqual((r.limit_hit, r.exit_code, r.signal, r.stdout), ("timeoutMs", 137, "SIGKILL", "before\n"))
        streamed: List[str] = []
        r = self.sb.commands.run("sleep 30", timeout_ms=300, on_stdout=streamed.append)
        self.assertEqual(r.limit_hit, "timeoutMs")
        self.assertEqual(self.sb.commands.run("echo alive").stdout, "alive\n")
        with self.assertRaises(InvalidOptionsError) as cm:
            self.sb.commands.run("true", timeout_ms=120_000)  # over the key's maxRunMs
        self.assertEqual(cm.exception.issues[0]["path"], "timeoutMs")


    def test_background_server_listed_used_waited_for_and_killed(self) -> None:
        self.sb.files.write("/tmp/pyweb/hi.txt", "hi from python\n")
        h = self.sb.commands.run("exec python3 -u -m http.server 8767 --bind 127.0.0.1", background=True, cwd="/tmp/pyweb")
        self.assertIsInstance(h, CommandHandle)
        self.assertGreater(h.pid, 0)
        self.assertEqual([c.pid for c in self.sb.commands.list()], [h.pid])
        self.assertEqual(self.sb.commands.list()[0].cwd, "/tmp/pyweb")
        # A foreground command proceeds while it runs and reaches it over the guest's loopback.
        fetch = (
            "import time, urllib.request\n"
            "for i in range(100):\n"
            "    try:\n"
            "        print(urllib.request.urlopen('http://127.0.0.1:8767/hi.txt', timeout=10).read().decode(), end=''); break\n"
            "    except OSError: time.sleep(0.2)\n"
        )
        self.assertEqual(self.sb.commands.run(["python3", "-c", fetch]).stdout, "hi from python\n")
        st = h.status()
        self.assertEqual(st.status, "running")
        self.assertIn("Serving HTTP on 127.0.0.1 port 8767", st.stdout)
        self.assertEqual(self.sb.commands.connect(h.pid).pid, h.pid)
        self.assertTrue(h.kill())
        r = h.wait(timeout_s=30)
        self.assertEqual((r.exit_code, r.signal), (137, "SIGKILL"))
        self.assertEqual(self.sb.commands.list(), [])
        self.assertFalse(h.kill())
        self.assertEqual(h.status().status, "exited")

    def test_snapshot_restore_fork_and_delete(self) -> None:
        self.sb.run_code("snap_var = 'saved'")
        snap = self.sb.snapshot()
        self.assertTrue(snap.id.startswith("snap_"))
        self.assertEqual((snap.sandbox_id, snap.tier), (self.sb.id, "heavy"))
        self.assertIn(snap.id, [s.id for s in Sandbox.list_snapshots(base_url=URL, api_key=KEY)])
        self.sb.run_code("snap_var = 'changed'")
        with Sandbox.restore(snap.id, base_url=URL, api_key=KEY) as copy:
            self.assertNotEqual(copy.id, self.sb.id)
            self.assertEqual(copy.run_code("snap_var").value, "'saved'")
        forks = self.sb.fork(2)
        try:
            self.assertEqual([f.run_code("snap_var").value for f in forks], ["'changed'", "'changed'"])
        finally:
            for f in forks:
                f.kill()
        with self.assertRaises(NotFoundError):  # another key's snapshot does not exist for it
            Sandbox.restore(snap.id, base_url=URL, api_key=KEY2)
        Sandbox.delete_snapshot(snap.id, base_url=URL, api_key=KEY)
        self.assertNotIn(snap.id, [s.id for s in Sandbox.list_snapshots(base_url=URL, api_key=KEY)])

    def test_pause_and_resume(self) -> None:
        self.sb.run_code("paused_var = 'still here'")
        self.assertEqual(self.sb.pause().status, "paused")
        self.assertEqual(self.sb.refresh().status, "paused")
        self.assertEqual(self.sb.run_code("paused_var").value, "'still here'")  # any call resumes it
        self.assertEqual(self.sb.refresh().status, "running")
        self.sb.pause()
        self.assertEqual(self.sb.resume().status, "running")

    def test_network_through_the_sandboxs_proxy(self) -> None:
        with create(tier="heavy", network={"allow": [f"localhost:{NET_PORT}"]}) as sb:
            # localhost is the guest's own in NO_PROXY; without it the request goes to the host's proxy, which resolves localhost on the host.
            code = "import os, urllib.request\nfor k in ('no_proxy', 'NO_PROXY'):\n    os.environ.pop(k, None)\n" f"urllib.request.urlopen('http://localhost:{NET_PORT}/').read()"
            self.assertEqual(sb.run_code(code).value, "b'hi'")
            refused = sb.run_code("import urllib.request, urllib.error\ncode = None\ntry:\n    urllib.request.urlopen('http://example.com/')\nexcept urllib.error.HTTPError as e:\n    code = e.code\ncode")
            self.assertEqual(refused.value, "403")
            self.assertEqual([e.decision for e in sb.network.log()], ["allowed", "denied"])

    def test_background_wait_term_and_errors(self) -> None:
        h = self.sb.commands.run(["sh", "-c", "echo out; sleep 0.3; exit 6"], background=True)
        r = h.wait()
        self.assertEqual((r.exit_code, r.stdout), (6, "out\n"))
        t = self.sb.commands.run("trap 'echo term; exit 5' TERM; echo ready; while true; do sleep 0.1; done", background=True)
        for _ in range(100):  # the trap is set once it says so
            if t.stdout == "ready\n":
                break
            time.sleep(0.1)
        self.assertTrue(self.sb.commands.kill(t.pid, "TERM"))
        self.assertEqual(t.wait().exit_code, 5)
        with self.assertRaises(NotFoundError):
            self.sb.commands.connect(999999)
        with self.assertRaises(InvalidOptionsError):
            self.sb.commands.run(["/no/such/binary"], background=True)
        with self.assertRaises(ValueError):
            self.sb.commands.run("true", background=True, on_stdout=print)  # type: ignore[call-overload]


class NetworkTests(unittest.TestCase):
    def test_fetch_with_allow_and_deny_and_the_network_log(self) -> None:
        allowed, denied = f"http://127.0.0.1:{NET_PORT}/hello?token=x", f"http://localhost:{NET_PORT}/hello"
        network = {"allow": [f"127.0.0.1:{NET_PORT}", f"localhost:{NET_PORT}"], "deny": ["localhost"]}
        with create(language="javascript", network=network) as sb:
            r = sb.run_code(f"const a = await fetch({json.dumps(allowed)});\nlet b;\ntry {{ await fetch({json.dumps(denied)}) }} catch (e) {{ b = [e.code, e.message] }}\n[a.status, await a.text(), b]")
            self.assertIsNone(r.error, r.error and r.error.traceback)
            reason = f'http://localhost:{NET_PORT} is denied by network.deny entry "localhost"'
            self.assertEqual(json.loads(r.value or "null"), [200, "hi", ["NETWORK_DENIED", f"fetch refused: {reason}"]])
            log = sb.network.log()
            self.assertEqual([type(e) for e in log], [NetworkLogEntry, NetworkLogEntry])
            ok, no = log
            self.assertEqual((ok.method, ok.url, ok.host, ok.port, ok.address, ok.hop, ok.decision, ok.status), ("GET", f"http://127.0.0.1:{NET_PORT}/hello", "127.0.0.1", NET_PORT, "127.0.0.1", 0, "allowed", 200))
            self.assertEqual((ok.bytes_sent, ok.bytes_received, ok.error), (0, 2, None))
            self.assertGreaterEqual(ok.duration_ms, 0)
            self.assertRegex(ok.time, r"^\d{4}-\d\d-\d\dT")
            self.assertEqual((no.host, no.port, no.address, no.decision, no.reason, no.status, no.bytes_received), ("localhost", NET_PORT, None, "denied", reason, None, 0))
        with create() as sb:
            self.assertEqual(sb.network.log(), [])

    def test_network_past_the_servers_grant_names_the_field(self) -> None:
        with self.assertRaises(InvalidOptionsError) as cm:
            create(language="javascript", network={"allow": [f"127.0.0.1:{NET_PORT}", "example.com"]})
        self.assertEqual(cm.exception.issues[0]["path"], "network.allow.1")
        self.assertIn("--allow-net", cm.exception.message)
        with self.assertRaises(InvalidOptionsError) as cm:
            create(language="javascript", network={"allow": [f"127.0.0.1:{NET_PORT}"], "deny": ["not a host"]})
        self.assertEqual(cm.exception.issues[0]["path"], "network.deny.0")


class LifecycleTests(unittest.TestCase):
    def test_commands_on_a_nano_sandbox_raise_tier_unavailable(self) -> None:
        with create() as sb:
            with self.assertRaises(TierUnavailableError) as cm:
                sb.commands.run("true")
            self.assertEqual(cm.exception.status, 501)
            self.assertIn('tier: "heavy"', cm.exception.message)
            with self.assertRaises(TierUnavailableError):
                sb.commands.run("true", on_stdout=print)

    def test_invalid_options_name_the_field(self) -> None:
        with self.assertRaises(InvalidOptionsError) as cm:
            create(limits={"memoryMb": 1})
        self.assertEqual(cm.exception.status, 400)
        self.assertEqual(cm.exception.issues[0]["path"], "limits.memoryMb")

    def test_context_manager_kills_and_kill_is_idempotent(self) -> None:
        with create() as sb:
            sid = sb.id
            self.assertIn(sid, [s.id for s in Sandbox.list(base_url=URL, api_key=KEY)])
        with self.assertRaises(NotFoundError):
            Sandbox.connect(sid, base_url=URL, api_key=KEY)
        sb.kill()  # already gone: no error

    def test_keep_alive_and_connect(self) -> None:
        with create(idle_timeout_ms=5000) as sb:
            self.assertEqual(sb.info.idle_timeout_ms, 5000)
            self.assertEqual(sb.keep_alive(60000).idle_timeout_ms, 60000)
            again = Sandbox.connect(sb.id, base_url=URL, api_key=KEY)
            sb.run_code("y = 'shared'")
            self.assertEqual(again.run_code("y").value, "'shared'")

    def test_keys_are_isolated_and_checked(self) -> None:
        with create() as sb:
            with self.assertRaises(NotFoundError):
                Sandbox.connect(sb.id, base_url=URL, api_key=KEY2)
            self.assertEqual(Sandbox.list(base_url=URL, api_key=KEY2), [])
        with self.assertRaises(AuthenticationError):
            Sandbox.list(base_url=URL, api_key="not-a-key-0123456789")

    def test_quota_exceeded(self) -> None:
        one = Sandbox.create(base_url=URL, api_key=KEY2)
        try:
            with self.assertRaises(QuotaExceededError):
                Sandbox.create(base_url=URL, api_key=KEY2)
        finally:
            one.kill()


if __name__ == "__main__":
    unittest.main()
