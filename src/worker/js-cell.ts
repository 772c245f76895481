// Turns one REPL cell of guest JavaScript into a global script QuickJS can run with top-level
// await, keeping every line (and nearly every column) where the user wrote it:
//   - top-level `let` / `const` become `var` and `class C` becomes `var C = class C`, so a later
//     cell may declare the same name again (as Node's REPL allows);
//   - `import ... from "fs"` becomes a `var` bound to the sandbox's built-in module.
// The rewritten text runs only inside QuickJS. Parse errors are reported in the user's source.
// The caller passes acorn's `parse`: the worker loads acorn from the path the host granted it (a
// bare import would resolve through the package's node_modules, which may be a symlink the
// permission model does not let the worker follow).
import type { parse as acornParse, Node, Program } from "acorn";

export type Parse = typeof acornParse;
import { MODULE_GLOBAL } from "./js-guest.js";

export class CellSyntaxError extends Error {
  constructor(
    message: string,
    readonly line: number,
    readonly column: number,
  ) {
    super(message);
  }
}

interface Edit {
  start: number;
  end: number;
  text: string;
}

interface ImportSpec {
  type: string;
  local: { name: string };
  imported?: { type: string; name?: string; value?: unknown };
}

export function rewriteCell(code: string, parse: Parse): string {
  let program: Program;
  try {
    program = parse(code, {
      ecmaVersion: "latest",
      sourceType: "script",
      allowAwaitOutsideFunction: true,
      allowImportExportEverywhere: true,
      allowHashBang: true,
      locations: true,
    });
  } catch (e) {
    // acorn recurses per nesting level: a cell nested deeper than the thread's stack allows is a
    // syntax error of the user's code, not a worker failure.
    if (e instanceof RangeError) throw new CellSyntaxError("code nested too deeply to parse", 1, 1);
    const err = e as SyntaxError & { loc?: { line: number; column: number } };
    const message = err.message.replace(/ \(\d+:\d+\)$/, "");
    throw new CellSyntaxError(message, err.loc?.line ?? 1, (err.loc?.column ?? 0) + 1);
  }
  const edits: Edit[] = [];
  for (const stmt of program.body) {
    if (stmt.type === "VariableDeclaration" && (stmt.kind === "let" || stmt.kind === "const")) {
      edits.push({ start: stmt.start, end: stmt.start + stmt.kind.length, text: "var".padEnd(stmt.kind.length) });
    } else if (stmt.type === "ClassDeclaration" && stmt.id) {
      edits.push({ start: stmt.start, end: stmt.start, text: `var ${stmt.id.name} = ` });
      edits.push({ start: stmt.end, end: stmt.end, text: ";" });
    } else if (stmt.type === "ImportDeclaration") {
      edits.push({ start: stmt.start, end: stmt.end, text: importAsVar(code, stmt) });
    }
  }
  let out = code;
  for (const e of edits.sort((a, b) => b.start - a.start)) out = out.slice(0, e.start) + e.text + out.slice(e.end);
  return out;
}

/** `import a, { b as c } from "fs"` → `var a = M("fs").default, c = M("fs").b;` on the same lines. */
function importAsVar(code: string, stmt: Node & { specifiers: ImportSpec[]; source: { value?: unknown } }): string {
  const mod = `${MODULE_GLOBAL}(${JSON.stringify(String(stmt.source.value))})`;
  const parts = stmt.specifiers.map((s) => {
    if (s.type === "ImportDefaultSpecifier") return `${s.local.name} = ${mod}.default`;
    if (s.type === "ImportNamespaceSpecifier") return `${s.local.name} = ${mod}`;
    const name = s.imported?.type === "Identifier" ? s.imported.name! : String(s.imported?.value);
    return `${s.local.name} = ${mod}[${JSON.stringify(name)}]`;
  });
  const text = parts.length > 0 ? `var ${parts.join(", ")};` : `${mod};`;
  // Keep the line count: the statement may have spanned several lines.
  const newlines = code.slice(stmt.start, stmt.end).split("\n").length - 1;
  return text + "\n".repeat(newlines);
}
