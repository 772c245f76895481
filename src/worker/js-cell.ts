// Turns one REPL cell of guest JavaScript into a global script QuickJS can run with top-level
// await, keeping every line (and nearly every column) where the user wrote it:
//   - top-level `let` / `const` / `class` bind configurable properties of the global object instead
//     of global lexical bindings, so a later cell may declare the same name again (as Node's REPL
//     allows). Their temporal dead zone is kept: the cell first puts every name it declares into
//     the dead zone (reading or assigning it throws a ReferenceError) and each declaration ends it
//     for its names when it runs;
//   - `import ... from "fs"` becomes a `var` bound to `await import("fs")`, so static and dynamic
//     imports load the same modules (through the worker's module loader).
// The rewritten text runs only inside QuickJS. Parse errors are reported in the user's source.
// The caller passes acorn's `parse`: the worker loads acorn from the path the host granted it (a
// bare import would resolve through the package's node_modules, which may be a symlink the
// permission model does not let the worker follow).
import type { parse as acornParse, Node, Pattern, Program } from "acorn";
import { LEXICAL_GLOBAL } from "./js/prelude.js";

export type Parse = typeof acornParse;

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
  const lexical: string[] = [];
  for (const stmt of program.body) {
    if (stmt.type === "VariableDeclaration" && (stmt.kind === "let" || stmt.kind === "const")) {
      // `let a = 1, [b] = c;` → `var {} = (a = L.init(["a"], 1), [b] = L.init(["b"], c), 0);`
      // (`var {}` declares nothing and keeps the statement's empty completion value.)
      edits.push({ start: stmt.start, end: stmt.start + stmt.kind.length, text: "var {} = (" });
      stmt.declarations.forEach((d, i) => {
        const names = bindingNames(d.id);
        lexical.push(...names);
        const bind = `${LEXICAL_GLOBAL}.init(${JSON.stringify(names)}, `;
        if (d.init) {
          edits.push({ start: d.init.start, end: d.init.start, text: bind });
          edits.push({ start: d.init.end, end: d.init.end, text: ")" });
        } else edits.push({ start: d.id.end, end: d.id.end, text: ` = ${bind}void 0)` });
        if (i === stmt.declarations.length - 1) edits.push({ start: d.end, end: d.end, text: ", 0)" });
      });
    } else if (stmt.type === "ClassDeclaration" && stmt.id) {
      lexical.push(stmt.id.name);
      edits.push({ start: stmt.start, end: stmt.start, text: `var {} = (${stmt.id.name} = ${LEXICAL_GLOBAL}.init(${JSON.stringify([stmt.id.name])}, ` });
      edits.push({ start: stmt.end, end: stmt.end, text: "), 0);" });
    } else if (stmt.type === "ImportDeclaration") {
      edits.push({ start: stmt.start, end: stmt.end, text: importAsVar(code, stmt) });
    }
  }
  if (lexical.length > 0) {
    // Before the first statement that runs (after any directive such as "use strict"), ahead of
    // that statement's own edits.
    const first = program.body.find((s) => !(s.type === "ExpressionStatement" && "directive" in s && typeof s.directive === "string"));
    if (first) edits.unshift({ start: first.start, end: first.start, text: `${LEXICAL_GLOBAL}.enter(${JSON.stringify(lexical)}); ` });
  }
  // Applied from the end of the text; edits at one offset land in the order they were listed.
  const order = edits.map((e, i) => ({ e, i })).sort((a, b) => b.e.start - a.e.start || b.i - a.i);
  let out = code;
  for (const { e } of order) out = out.slice(0, e.start) + e.text + out.slice(e.end);
  return out;
}

/** The names a declarator's target binds: `x`, or every name inside `{ a, b: [c, ...d] = e }`. */
function bindingNames(target: Pattern): string[] {
  switch (target.type) {
    case "Identifier":
      return [target.name];
    case "ObjectPattern":
      return target.properties.flatMap((p) => bindingNames(p.type === "RestElement" ? p.argument : p.value));
    case "ArrayPattern":
      return target.elements.flatMap((e) => (e ? bindingNames(e) : []));
    case "AssignmentPattern":
      return bindingNames(target.left);
    case "RestElement":
      return bindingNames(target.argument);
    default:
      return []; // member expressions appear only in assignments, not in declarations
  }
}

/** `import a, { b as c } from "fs"` → `var a = (await import("fs")).default, c = (await import("fs"))["b"];` on the same lines. */
function importAsVar(code: string, stmt: Node & { specifiers: ImportSpec[]; source: { value?: unknown } }): string {
  const load = `await import(${JSON.stringify(String(stmt.source.value))})`;
  const mod = `(${load})`;
  const parts = stmt.specifiers.map((s) => {
    if (s.type === "ImportDefaultSpecifier") return `${s.local.name} = ${mod}.default`;
    if (s.type === "ImportNamespaceSpecifier") return `${s.local.name} = ${mod}`;
    const name = s.imported?.type === "Identifier" ? s.imported.name! : String(s.imported?.value);
    return `${s.local.name} = ${mod}[${JSON.stringify(name)}]`;
  });
  const text = parts.length > 0 ? `var ${parts.join(", ")};` : `${load};`;
  // Keep the line count: the statement may have spanned several lines.
  const newlines = code.slice(stmt.start, stmt.end).split("\n").length - 1;
  return text + "\n".repeat(newlines);
}
