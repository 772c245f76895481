// Baseline for the density bench's pooled rows: a Node process that echoes each line it reads on
// stdin back on stdout. Host write -> child wakes -> child writes -> host wakes: the bare cost of
// one cross-process round trip on this machine, with no sandbox, no framing and no schema.
import process from "node:process";
process.stdin.setEncoding("utf8");
let buf = "";
process.stdin.on("data", (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf("\n")) >= 0) {
    process.stdout.write(buf.slice(0, i + 1));
    buf = buf.slice(i + 1);
  }
});
