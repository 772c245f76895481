// Guest servers for the exposed-port tests (library, HTTP proxy, Python client): one stdlib Python
// script with three modes — `http` (answers any method with what it received, as JSON), `tcp`
// (raw echo) and `ws` (a WebSocket handshake, a first message saying what the request was, then
// an echo of each text or binary frame) — started in the background of a heavy sandbox.
import type { Sandbox } from "../src/index.js";

export const GUEST_APP = String.raw`
import base64, hashlib, json, socket, socketserver, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode, port = sys.argv[1], int(sys.argv[2])

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def handle_any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        if self.path.startswith("/big"):
            chunk = b"x" * 65536
            self.send_response(200)
            self.send_header("content-length", str(len(chunk) * 32))
            self.end_headers()
            for _ in range(32):
                self.wfile.write(chunk)
            return
        out = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("content-type", "application/json")
        self.send_header("x-guest", "yes")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any
    def log_message(self, *a):
        pass

def recv_exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b

def send_frame(c, opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    c.sendall(head + payload)

class Ws(socketserver.BaseRequestHandler):
    def handle(self):
        c = self.request
        req = b""
        while b"\r\n\r\n" not in req:
            d = c.recv(4096)
            if not d:
                return
            req += d
        lines = req.split(b"\r\n\r\n")[0].decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        send_frame(c, 1, json.dumps({"requestLine": lines[0], "headers": headers}).encode())
        try:
            while True:
                b0, b1 = recv_exact(c, 2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(recv_exact(c, 2), "big")
                elif n == 127:
                    n = int.from_bytes(recv_exact(c, 8), "big")
                mask = recv_exact(c, 4) if b1 & 0x80 else b"\0\0\0\0"
                data = bytes(x ^ mask[i % 4] for i, x in enumerate(recv_exact(c, n)))
                if b0 & 0x0F == 8:
                    send_frame(c, 8, data[:2])
                    return
                send_frame(c, b0 & 0x0F, data)
        except EOFError:
            pass

class Tcp(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d:
                self.request.shutdown(socket.SHUT_WR)
                return
            self.request.sendall(d)

class Threads(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

if mode == "http":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Echo).serve_forever()
else:
    Threads(("127.0.0.1", port), Ws if mode == "ws" else Tcp).serve_forever()
`;

/**
 * Start `argv` in the sandbox's background, in a session of its own (the image has no setsid(1):
 * Python's start_new_session), so it outlives the command that starts it; then wait until
 * something accepts connections on `port` there.
 */
export async function startInGuest(sb: Sandbox, argv: string[], port: number): Promise<void> {
  const launch = `import subprocess, sys; subprocess.Popen(sys.argv[1:], start_new_session=True, stdin=subprocess.DEVNULL, stdout=open("/tmp/server-${port}.log", "w"), stderr=subprocess.STDOUT)`;
  const r = await sb.commands.run(["python3", "-c", launch, ...argv]);
  if (r.exitCode !== 0) throw new Error(`starting ${argv.join(" ")} failed: ${r.stderr}`);
  const end = Date.now() + 20_000;
  for (;;) {
    try {
      const s = await sb.ports.connect(port);
      s.destroy();
      return;
    } catch (e) {
      if (Date.now() > end) throw new Error(`nothing listens on port ${port} in the sandbox: ${(e as Error).message}; log: ${(await sb.commands.run(["cat", `/tmp/server-${port}.log`])).stdout}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }
}

/** Write the guest app and start it in `mode` on `port`. */
export async function startGuestApp(sb: Sandbox, mode: "http" | "tcp" | "ws", port: number): Promise<void> {
  await sb.files.write("/tmp/guest_app.py", GUEST_APP);
  await startInGuest(sb, ["python3", "/tmp/guest_app.py", mode, String(port)], port);
}
