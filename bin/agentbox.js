#!/usr/bin/env node
// The agentbox command; the code lives in dist/cli/ (built by `npm install`). A one-shot Python
// run's worker starts first (cli/early.ts), so it boots while the rest of the CLI loads.
import { startEarly } from "../dist/cli/early.js";

startEarly(process.argv.slice(2));
const { main } = await import("../dist/cli/main.js");
process.exitCode = await main(process.argv.slice(2));
