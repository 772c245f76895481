// The slice of Pyodide's API the Python worker uses (the package's own .d.ts is not imported: the
// worker loads Pyodide by path), and the state the Wasm import hooks read, which the session sets.
import type { EmFs, EmNode } from "../../vfs/memfs.js";

export type Fn = (...args: number[]) => number;

/** State the Wasm import hooks (python-worker.ts) read. Mutable: a pooled worker is configured after it restored. */
export interface WasmHooks {
  memCapBytes: number;
  memHit: boolean;
  virtualMs: number;
  /** null until configured: real entropy while booting. */
  rng: null | ((view: Uint8Array) => void);
  memory: { buffer: ArrayBuffer } | null;
  /** Called on every clock read from the guest: a blocked guest (sleep, polling) still reads the
   *  clock, so buffered output gets out while it waits. */
  onClock: null | (() => void);
}


export interface PyProxyFn {
  (...args: unknown[]): unknown;
  destroy(): void;
}
export interface Pyodide {
  version: string;
  FS: EmFs & {
    readFile(p: string): Uint8Array;
    writeFile(p: string, data: Uint8Array): void;
    mkdirTree(p: string): void;
    readdir(p: string): string[];
    lstat(p: string): { mode: number; size: number };
    stat(p: string): { mode: number; size: number };
    unlink(p: string): void;
    rmdir(p: string): void;
    analyzePath(p: string): { exists: boolean };
    mount(type: unknown, opts: unknown, mountpoint: string): void;
    lookupPath(p: string, opts?: { follow?: boolean }): { node: EmNode };
  };
  runPython(code: string, opts?: { globals?: unknown; filename?: string }): unknown;
  globals: { get(name: string): PyProxyFn };
  pyimport(name: string): Record<string, PyProxyFn> & { destroy(): void };
  setStdout(opts: { write: (buf: Uint8Array) => number }): void;
  setStderr(opts: { write: (buf: Uint8Array) => number }): void;
  setStdin(opts: { error: boolean }): void;
  setInterruptBuffer(buf: Int32Array): void;
  unregisterJsModule(name: string): void;
  makeMemorySnapshot(): Uint8Array;
  _module: Record<string, Fn>;
}
