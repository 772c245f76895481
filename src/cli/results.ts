// `agentbox run`'s rich results as files: each written, as it happens, in its richest form, under
// a name of our own (result-N.ext) in one directory. Nothing the guest says names a file, and a
// name already taken by a symlink is refused rather than followed, so nothing lands outside it.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { DisplayResult, MimeType } from "../index.js";

/** The file form of each MIME type, richest first: a result is written as the first it has. */
const FILE_FORMS: readonly (readonly [MimeType, string])[] = [
  ["image/png", ".png"],
  ["image/jpeg", ".jpg"],
  ["image/svg+xml", ".svg"],
  ["application/pdf", ".pdf"],
  ["text/html", ".html"],
  ["text/markdown", ".md"],
  ["application/json", ".json"],
  ["text/plain", ".txt"],
];

/** Types whose data is base64 text, written decoded. */
const BASE64_TYPES: ReadonlySet<MimeType> = new Set(["image/png", "image/jpeg", "application/pdf"]);

// O_NOFOLLOW: a symlink planted at result-1.png is an error (ELOOP), not a way out of the directory.
const OPEN_FLAGS = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | (fs.constants.O_NOFOLLOW ?? 0);

export interface ResultFile {
  /** 1-based, in the order the results happened. */
  index: number;
  mimeTypes: string[];
  path: string;
}

/** The richest file form of `r`: its MIME type and the file extension that goes with it. */
export function fileForm(r: DisplayResult): readonly [MimeType, string] | undefined {
  return FILE_FORMS.find(([mime]) => typeof r.data[mime] === "string");
}

export class ResultFiles {
  readonly files: ResultFile[] = [];
  private dir: string | undefined;
  private count = 0;

  /** `dir`: where to write (made now, so a bad one fails before the run); none: a fresh temporary directory on first use. */
  constructor(dir: string | undefined) {
    if (dir !== undefined) {
      this.dir = path.resolve(dir);
      fs.mkdirSync(this.dir, { recursive: true });
    }
  }

  /** The directory results went to, once there is one. */
  get directory(): string | undefined {
    return this.dir;
  }

  /** Write the next result; returns where, or undefined when it has no form a file can hold. */
  write(r: DisplayResult): ResultFile | undefined {
    const index = ++this.count;
    const form = fileForm(r);
    if (!form) return undefined;
    const [mime, ext] = form;
    this.dir ??= fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-results-"));
    const file = path.join(this.dir, `result-${index}${ext}`);
    const text = r.data[mime]!;
    const fd = fs.openSync(file, OPEN_FLAGS, 0o644);
    try {
      fs.writeSync(fd, BASE64_TYPES.has(mime) ? Buffer.from(text, "base64") : Buffer.from(text, "utf8"));
    } finally {
      fs.closeSync(fd);
    }
    const written = { index, mimeTypes: Object.keys(r.data), path: file };
    this.files.push(written);
    return written;
  }
}
