// Baseline for the cluster bench: the least a Node HTTP hop costs on this machine. A reverse proxy
// with nothing of agentbox in it (node:http server, keep-alive agent, headers and body piped both
// ways) in front of one node; prints "ready" once it listens. Usage: node bare-proxy.mjs TARGET_URL
import http from "node:http";
import process from "node:process";
import { URL } from "node:url";

const target = new URL(process.argv[2]);
const agent = new http.Agent({ keepAlive: true });
const server = http.createServer((req, res) => {
  const up = http.request({ hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent }, (r) => {
    res.writeHead(r.statusCode ?? 502, r.headers);
    r.pipe(res);
  });
  up.on("error", () => res.destroy());
  req.pipe(up);
});
server.listen(0, "127.0.0.1", () => process.stdout.write(`ready http://127.0.0.1:${server.address().port}\n`));
