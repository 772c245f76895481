// as agentbox starts its engine thread (256 MB stack, 192 MB heap cap)
import { Worker } from "node:worker_threads";
const w = new Worker("require('node:worker_threads'); process.exit(0)", { eval: true, resourceLimits: { stackSizeMb: 256, maxOldGenerationSizeMb: 192 } });
w.on("exit", () => process.exit(0));
