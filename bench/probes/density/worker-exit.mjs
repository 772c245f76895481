import { Worker } from "node:worker_threads";
const w = new Worker("process.exit(0)", { eval: true });
w.on("exit", () => process.exit(0));
