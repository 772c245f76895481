// The names of what this build runs, for surfaces that list or check them (CLI flags, MCP tools):
// derived from the engine registry, never written out elsewhere.
import { TIERS } from "../policy/options.js";
import { HEAVY_BACKENDS, LANGUAGES } from "./registry.js";

export { TIERS, LANGUAGES, HEAVY_BACKENDS };
