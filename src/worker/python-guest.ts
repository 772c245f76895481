// Python source the worker runs inside CPython. SETUP runs once before the memory snapshot is
// taken (so every restored sandbox already has it); CLOSE_BRIDGE runs after every restore, because
// Pyodide re-registers its JavaScript modules when it boots from a snapshot.

/** Defines the `_agentbox` module: REPL-style execution and traceback formatting. */
export const SETUP = String.raw`
import sys, types, builtins, linecache, traceback, json

def _make_agentbox():
    from pyodide.code import eval_code
    mod = types.ModuleType("_agentbox")
    state = {"n": 0}

    def _format_error(exc):
        tb = exc.__traceback__
        # Drop the frames of the runner itself: the traceback starts in the user's cell.
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
            tb = tb.tb_next
        try:
            text = "".join(traceback.format_exception(type(exc), exc, tb))
        except BaseException:
            text = type(exc).__name__ + "\n"
        try:
            message = str(exc)
        except BaseException:
            message = "<unprintable>"
        return {"name": type(exc).__name__, "message": message[:65536], "traceback": text[-262144:]}

    def run(code, value_cap):
        state["n"] += 1
        filename = "<cell-%d>" % state["n"]
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        value = None
        error = None
        try:
            result = eval_code(code, sys.modules["__main__"].__dict__, filename=filename)
            if result is not None:
                value = repr(result)
                if len(value) > value_cap:
                    value = value[:value_cap]
        except BaseException as exc:
            error = _format_error(exc)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        return json.dumps({"value": value, "error": error})

    def configure(env_json, home):
        # Per-sandbox set-up, called directly (no parse) so a pooled worker answers fast.
        import os, random, __main__
        os.environ.clear()
        os.environ.update(json.loads(env_json))
        os.makedirs(home, exist_ok=True)
        os.chdir(home)
        # os.urandom is the sandbox's seeded source, so this reseeds deterministically.
        random.seed(int.from_bytes(os.urandom(32), "big"))
        keep = ("__name__", "__doc__", "__builtins__", "__loader__", "__spec__", "__package__")
        for k in [k for k in __main__.__dict__ if k not in keep]:
            del __main__.__dict__[k]
        state.update(n=0)
        linecache.cache.clear()

    def close_bridge():
        import gc
        blocked = ("js", "pyodide_js", "pyodide.http", "pyodide.webloop", "pyodide._package_loader", "pyodide.ffi.wrappers",
                   "pyodide.console", "micropip", "pyodide_http", "pyodide.canvas", "_pyodide._importhook_js")
        prefixes = tuple(b + "." for b in blocked)
        removed = [name for name in list(sys.modules) if name in blocked or name.startswith(prefixes)]
        for name in removed:
            del sys.modules[name]
        if removed:
            gc.collect()
        return len(removed)

    mod.run = run
    mod.configure = configure
    mod.close_bridge = close_bridge
    mod.format_error = _format_error
    return mod

sys.modules["_agentbox"] = _make_agentbox()
del _make_agentbox

# Warm the modules agents reach for first, so a restored sandbox does not pay for them.
import os, io, re, csv, math, json, datetime, collections, itertools, functools, statistics, decimal, fractions, string, textwrap, dataclasses, typing, pathlib, base64, hashlib, struct, copy, pprint, enum, heapq, bisect, operator, random, uuid, secrets, time
import pyodide.code
`;

/**
 * Removes every module that can hand the guest a JavaScript object, after every restore (Pyodide
 * re-imports some of them when it boots from a snapshot; `pyodide._package_loader` must exist then,
 * so this cannot happen before the snapshot), then a full collection frees their JsProxy objects.
 */
export const CLOSE_BRIDGE = "import _agentbox; _agentbox.close_bridge()";
