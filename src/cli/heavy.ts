// The heavy tier's commands: `agentbox exec --tier heavy -- CMD...` (one command in a fresh
// sandbox) and `agentbox image build|list|rm`. Thin: parse, call the public API, print.
import { parseArgs } from "node:util";
import { buildImage, buildMicrovmArtefacts, type CommandOptions, IMAGE_PRESET_NAMES, imageLabel, InvalidOptionsError, type ImagePreset, LimitError, listImages, removeImage, Sandbox, type AgentboxError, type SandboxOptions } from "../index.js";
import { flagError, flagHelp, flagOptions, parseInteger, readFlags, UsageError, type FlagName } from "./flags.js";
import { stopSignal } from "./lifecycle.js";
import { errorJson } from "./output.js";

const EXEC_FLAGS = ["tier", "image", "memory", "timeout", "cpus", "disk", "packages", "backend", "env", "expose", "json", "help"] as const satisfies FlagName[];

/** How long an exposed server may run when --timeout is not given: the library's longest. */
const EXPOSE_TIMEOUT_MS = 24 * 3600 * 1000;

export const EXEC_USAGE = `usage: agentbox exec [--tier heavy] [options] -- CMD [ARG...]

  run one command in a fresh heavy-tier sandbox (a Debian userland in gVisor or a microVM) and print its output

options:
${flagHelp(EXEC_FLAGS.filter((f) => f !== "tier" && f !== "help"), { json: "print one JSON object with exitCode, stdout and stderr" })}
exit codes: 0 the command exited 0, 1 it exited non-zero, 2 a limit was hit, 64 bad usage, 70 internal error,
130 stopped by Ctrl-C (SIGINT) or SIGTERM

example: agentbox exec --expose 8000 -- python3 -m http.server 8000 --bind 127.0.0.1`;

export const IMAGE_USAGE = `usage: agentbox image build [--preset base|data] [--backend gvisor|microvm] [--packages A,B] [--force] | image list [--json] | image rm ID

  build   build the heavy tier's root file system from Debian packages (python3, bash, coreutils,
          plus the preset's and --packages) with the guest agent; cached under the user's cache
          directory. --preset data adds the data stack (numpy, pandas, matplotlib, scipy,
          scikit-learn, seaborn, statsmodels, sympy, networkx, Pillow, openpyxl, xlsxwriter,
          beautifulsoup4, lxml, requests, tabulate, fonts); select it with --image data.
          --backend microvm also makes the microVM's kernel, initramfs and ext4 root disk from it
  list    the images built on this machine
  rm      remove an image by id (or a unique prefix)`;

interface Io {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

function packagesOf(s: string | undefined): string[] {
  return s ? s.split(",").map((p) => p.trim()).filter(Boolean) : [];
}

export async function execCommand(argv: string[], io: Io): Promise<number> {
  let sb: Sandbox | undefined;
  let json = false;
  try {
    const read = readFlags(argv, EXEC_FLAGS);
    const { values: v, positionals: cmd } = read;
    if (v.help) {
      io.stdout(`${EXEC_USAGE}\n`);
      return 0;
    }
    json = Boolean(v.json);
    const options = flagOptions(read, EXEC_FLAGS);
    if (options.tier !== undefined && options.tier !== "heavy") throw new UsageError(`--tier: exec needs the heavy tier (a real Linux userland), got ${JSON.stringify(options.tier)}`);
    if (cmd.length === 0) throw new UsageError("give the command after --, e.g. agentbox exec --tier heavy -- ls -l /");
    const expose = ((v.expose as string[] | undefined) ?? []).map((p) => {
      const n = parseInteger(p, "expose");
      if (n < 1 || n > 65535) throw new UsageError(`--expose: expected a port from 1 to 65535, got ${p}`);
      return n;
    });
    await Sandbox.configurePool({ size: 0 });
    sb = await Sandbox.create({ ...options, tier: "heavy", pool: false } as SandboxOptions).catch((e: unknown) => {
      throw e instanceof InvalidOptionsError ? flagError(e, EXEC_FLAGS) : e;
    });
    const runOpts: CommandOptions = json ? {} : { onStdout: io.stdout, onStderr: io.stderr };
    if (expose.length > 0) {
      // A server runs until it exits or the user stops it: Ctrl-C ends the command and the sandbox (via finally).
      runOpts.signal = stopSignal();
      if (read.raw.timeout === undefined) runOpts.timeoutMs = EXPOSE_TIMEOUT_MS;
    }
    const running = sb.commands.run(cmd, runOpts);
    // Listeners first: a connection before the server listens is closed, not refused at the door.
    for (const port of expose) io.stderr(`agentbox: port ${port} of the sandbox is at ${(await sb.ports.expose(port)).url}\n`);
    let r;
    try {
      r = await running;
    } catch (e) {
      if (runOpts.signal?.aborted) {
        io.stderr(`agentbox: stopped (${String(runOpts.signal.reason)})\n`);
        return 130;
      }
      throw e;
    }
    if (json) io.stdout(`${JSON.stringify(r)}\n`);
    else if (r.limitHit) io.stderr(`agentbox: limit hit: limits.${r.limitHit}: the command was killed\n`);
    return r.limitHit ? 2 : r.exitCode === 0 ? 0 : 1;
  } catch (e) {
    const code = e instanceof UsageError || e instanceof InvalidOptionsError ? 64 : e instanceof LimitError ? 2 : 70;
    if (json) {
      const err = e as AgentboxError;
      io.stdout(`${JSON.stringify(errorJson(err, code))}\n`);
    } else io.stderr(`agentbox: ${(e as Error).message}\n${code === 64 ? `\n${EXEC_USAGE}\n` : ""}`);
    return code;
  } finally {
    await sb?.kill();
  }
}

export async function imageCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { preset: { type: "string" }, packages: { type: "string" }, backend: { type: "string" }, force: { type: "boolean" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
      });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const v = parsed.values;
    if (v.help || sub === "-h" || sub === "--help") {
      io.stdout(`${IMAGE_USAGE}\n`);
      return 0;
    }
    if (sub === "build") {
      if (parsed.positionals.length > 0) throw new UsageError("image build takes no positional arguments");
      if (v.backend !== undefined && v.backend !== "gvisor" && v.backend !== "microvm") throw new UsageError(`--backend: expected gvisor or microvm, got ${JSON.stringify(v.backend)}`);
      if (v.preset !== undefined && !(IMAGE_PRESET_NAMES as readonly string[]).includes(v.preset)) throw new UsageError(`--preset: expected one of ${IMAGE_PRESET_NAMES.join(", ")}, got ${JSON.stringify(v.preset)}`);
      const preset = v.preset as ImagePreset | undefined;
      if (v.backend === "microvm") {
        const a = await buildMicrovmArtefacts({ preset, packages: packagesOf(v.packages), force: Boolean(v.force), onProgress: (l) => io.stderr(`microvm: ${l}\n`) });
        io.stdout(`${a.imageId} microvm:${a.id}\n`);
        return 0;
      }
      const img = await buildImage({ preset, packages: packagesOf(v.packages), force: Boolean(v.force), onProgress: (l) => io.stderr(`image: ${l}\n`) });
      io.stdout(`${img.id}\n`);
      return 0;
    }
    if (sub === "list") {
      const all = listImages();
      if (v.json) io.stdout(`${JSON.stringify(all)}\n`);
      else {
        for (const i of all) io.stdout(`${i.id}  ${(i.sizeBytes / 2 ** 20).toFixed(0).padStart(5)} MB  ${i.createdAt}  ${imageLabel(i.packages)}\n`);
      }
      return 0;
    }
    if (sub === "rm") {
      if (parsed.positionals.length !== 1) throw new UsageError("image rm takes one image id");
      if (!removeImage(parsed.positionals[0]!)) {
        io.stderr(`agentbox: no single image matches ${JSON.stringify(parsed.positionals[0])} (see \`agentbox image list\`)\n`);
        return 1;
      }
      return 0;
    }
    throw new UsageError(sub === undefined ? "missing image subcommand" : `unknown image subcommand ${JSON.stringify(sub)}`);
  } catch (e) {
    const code = e instanceof UsageError || e instanceof InvalidOptionsError ? 64 : 70;
    io.stderr(`agentbox: ${(e as Error).message}\n${code === 64 ? `\n${IMAGE_USAGE}\n` : ""}`);
    return code;
  }
}
