// The language a file runs as, by its extension. A leaf module: cli/early.ts decides with it
// before the library is loaded, main.ts (pickLanguage) after.
import path from "node:path";
import type { Language } from "../index.js";

const EXTENSIONS: Record<string, Language> = {
  ".py": "python",
  ".js": "javascript",
  ".mjs": "javascript",
  ".cjs": "javascript",
  ".ts": "typescript",
  ".mts": "typescript",
  ".cts": "typescript",
};

/** The language of `file` by its extension; python for inline code (no file) and any other extension. */
export function languageOfFile(file: string | undefined): Language {
  return (file !== undefined && EXTENSIONS[path.extname(file).toLowerCase()]) || "python";
}
