// Python source the worker runs inside CPython. SETUP runs once before the memory snapshot is
// taken (so every restored sandbox already has it); CLOSE_BRIDGE runs after every restore, because
// Pyodide re-registers its JavaScript modules when it boots from a snapshot.

/** Defines the `_agentbox` module: REPL-style execution and traceback formatting. */
export const SETUP = String.raw`
import sys, types, builtins, linecache, traceback, json

def _make_event_loop():
    # asyncio without the JavaScript bridge. Pyodide's WebLoop schedules through JavaScript, which
    # the sandbox closes; this loop has no I/O to wait for (no sockets, no threads, no signals), so
    # the selector it polls only lets time pass: time.sleep, which follows the sandbox clock
    # (instant on the virtual clock), in short slices so the time limit's interrupt gets in.
    import asyncio, asyncio.base_events, asyncio.events, signal, time

    # Set by the time limit's SIGINT, cleared by each new loop (each asyncio.run).
    state = {"interrupted": False}

    class _Clock:
        SLICE_S = 0.02

        def select(self, timeout):
            if timeout is None:
                if state["interrupted"]:
                    # The interrupt landed between a wake-up's dequeue and its run, so a task can
                    # never wake: asyncio.run's clean-up would wait forever. The time limit stopped
                    # this program; say so rather than report a deadlock.
                    raise KeyboardInterrupt
                raise RuntimeError("asyncio deadlock: every task waits and nothing is scheduled "
                                   "(there is no I/O or thread in the sandbox that could wake them)")
            end = time.monotonic() + timeout
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(left, self.SLICE_S))
            return ()

        def close(self):
            pass

    class SandboxEventLoop(asyncio.base_events.BaseEventLoop):
        def __init__(self):
            super().__init__()
            self._selector = _Clock()
            state["interrupted"] = False

        def _process_events(self, event_list):
            pass

        def _write_to_self(self):
            pass

    class SandboxEventLoopPolicy(asyncio.events._BaseDefaultEventLoopPolicy):
        _loop_factory = SandboxEventLoop

    def interrupted(signum, frame):
        state["interrupted"] = True
        raise KeyboardInterrupt

    def install():
        # Undo what pyodide.webloop patched in at import: its asyncio.run and time.sleep reach
        # JavaScript (and keep the WebLoop module's globals, JS functions among them, alive).
        time.sleep = getattr(time.sleep, "__wrapped__", time.sleep)
        asyncio.run = getattr(asyncio.run, "__wrapped__", asyncio.run)
        asyncio.events._set_event_loop_policy(SandboxEventLoopPolicy())
        # Pyodide marks its WebLoop as always running; between runs, no loop runs here.
        asyncio.events._set_running_loop(None)
        # asyncio.Runner turns a first SIGINT into cancelling the main task when the handler is the
        # default one; the time limit is a SIGINT and must stop even a task that never yields.
        signal.signal(signal.SIGINT, interrupted)

    return install

# _make_display is defined by guest/display.py, which the worker runs just before this code.


def _make_agentbox():
    import ast, asyncio, inspect, os, re, importlib.util
    from pyodide.code import CodeRunner
    mod = types.ModuleType("_agentbox")
    state = {"n": 0, "display_fd": -1}
    install_event_loop = _make_event_loop()
    install_event_loop()

    def emit_display(result):
        # Out to the host as it happens: one JSON line on the worker's display device (a file
        # descriptor, see python/display-channel.ts), after the output printed before it.
        fd = state["display_fd"]
        if fd < 0:
            return False
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            os.write(fd, (json.dumps(result) + "\n").encode("ascii"))
        except (OSError, TypeError, ValueError):
            return False
        return True

    display, display_begin, display_main, display_finish = _make_display(emit_display)
    builtins.display = display

    def _format_error(exc):
        tb = exc.__traceback__
        # Drop the frames of the runner itself: the traceback starts in the user's cell.
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
            tb = tb.tb_next
        try:
            # At most the outermost 1000 frames: a recursion allowed by a raised recursion limit
            # can leave a million, and formatting them all took longer than the run.
            text = "".join(traceback.format_exception(type(exc), exc, tb, limit=1000))
        except BaseException:
            text = type(exc).__name__ + "\n"
        try:
            message = str(exc)
        except BaseException:
            message = "<unprintable>"
        return {"name": type(exc).__name__, "message": message[:65536], "traceback": text[-262144:]}

    def run(code, value_cap, display_fd=-1, nano_only=False):
        filename = "<cell-%d>" % (state["n"] + 1)
        # Parsed once: the tree serves the tier check (nano_only) and then the compile.
        runner = parse_error = None
        try:
            runner = CodeRunner(code, filename=filename, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except BaseException as exc:
            parse_error = exc
        if nano_only and runner is not None:
            try:
                reason = needs_heavy(runner.ast)
            except Exception:
                # The guest can reach what the check reads (its globals): whatever breaks it
                # runs here, on the tier it asked for.
                reason = None
            if reason is not None:
                # Nothing ran: no cell number taken, no output, no display state touched.
                return json.dumps({"heavy": reason[:1024]})
        state["n"] += 1
        state["display_fd"] = display_fd
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        value = None
        error = None
        display_begin(value_cap - 1)
        try:
            if parse_error is not None:
                raise parse_error
            runner.compile()
            scope = sys.modules["__main__"].__dict__
            if runner.code is not None and runner.code.co_flags & inspect.CO_COROUTINE:
                # A cell with a top-level await runs on a fresh event loop of its own, like
                # asyncio.run: tasks it leaves behind are cancelled, not resumed by a later cell.
                result = asyncio.run(runner.run_async(scope))
            else:
                result = runner.run(scope)
            if result is not None:
                value = repr(result)
                if len(value) > value_cap:
                    value = value[:value_cap]
                display_main(result, value)
        except BaseException as exc:
            error = _format_error(exc)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        results, cut = display_finish()
        return json.dumps({"value": value, "error": error, "results": results, "cut": cut})

    # Tier "auto": what only the heavy tier has. Modules that import here but cannot work (no
    # processes in WebAssembly), and os functions that start a process.
    process_modules = {"subprocess": "starts processes", "multiprocessing": "starts processes", "pty": "starts processes"}
    process_names = {"concurrent.futures": ("ProcessPoolExecutor",)}
    os_process = re.compile(r"(system|popen|fork|forkpty|exec[lv]p?e?|spawn[lv]p?e?|posix_spawnp?)$")

    def module_reason(name):
        top = name.partition(".")[0]
        if top in process_modules:
            return "import of %s (%s; only the heavy tier has processes)" % (name, process_modules[top])
        if top in sys.modules:
            return None
        try:
            # Top-level names only: finding a submodule would import (run) its package.
            found = importlib.util.find_spec(top) is not None
        except Exception:
            # Pyodide's finder raises for its packages that are not installed (numpy, pandas, ...).
            found = False
        return None if found else "import of %s (not in the nano tier's Python)" % top

    def needs_heavy(tree):
        """Why this cell needs the heavy tier, or None. Reads the tree only; runs none of it."""
        import os
        scope = sys.modules["__main__"].__dict__
        os_aliases = {"os"} | {k for k, v in scope.items() if v is os}
        os_attrs = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if (why := module_reason(alias.name)) is not None:
                        return why
                    if alias.name == "os" and alias.asname:
                        os_aliases.add(alias.asname)
            elif isinstance(node, ast.ImportFrom):
                if node.level or not node.module:
                    continue
                if (why := module_reason(node.module)) is not None:
                    return why
                for alias in node.names:
                    if node.module == "os" and os_process.match(alias.name):
                        return "os.%s (starts a process; only the heavy tier has processes)" % alias.name
                    if alias.name in process_names.get(node.module, ()):
                        return "%s.%s (starts processes; only the heavy tier has processes)" % (node.module, alias.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                os_attrs.append((node.value.id, node.attr))
            elif isinstance(node, ast.Name):
                # A process function bound in an earlier cell (from os import system).
                fn = scope.get(node.id)
                if isinstance(fn, types.ModuleType) and fn.__name__.partition(".")[0] in process_modules:
                    return "%s (%s; only the heavy tier has processes)" % (fn.__name__, process_modules[fn.__name__.partition(".")[0]])
                if callable(fn) and getattr(fn, "__module__", None) in ("os", "posix") and os_process.match(getattr(fn, "__name__", "")):
                    return "os.%s (starts a process; only the heavy tier has processes)" % fn.__name__
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                f = node.func
                if (isinstance(f, ast.Name) and f.id == "__import__") or (isinstance(f, ast.Attribute) and f.attr == "import_module"):
                    if (why := module_reason(node.args[0].value)) is not None:
                        return why
        for base, attr in os_attrs:
            if base in os_aliases and os_process.match(attr):
                return "os.%s (starts a process; only the heavy tier has processes)" % attr
        return None

    def reseed():
        import os, random
        # os.urandom is the sandbox's seeded source, so this reseeds deterministically.
        random.seed(int.from_bytes(os.urandom(32), "big"))

    def configure(env_json, home):
        # Per-sandbox set-up, called directly (no parse) so a pooled worker answers fast.
        import os, random, __main__
        os.environ.clear()
        os.environ.update(json.loads(env_json))
        os.makedirs(home, exist_ok=True)
        os.chdir(home)
        reseed()
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
        from pyodide.ffi import JsProxy
        for name in removed:
            module = sys.modules.pop(name)
            # A submodule stays reachable as an attribute of its package (pyodide.webloop).
            parent, _, child = name.rpartition(".")
            if getattr(sys.modules.get(parent), child, None) is module:
                delattr(sys.modules[parent], child)
        # The modules' globals live on (Pyodide holds some of their functions from JavaScript) and
        # the guest can find them, and the loaders of JavaScript modules, through
        # gc.get_objects(): take the JavaScript objects out of them.
        for obj in gc.get_objects():
            if isinstance(obj, dict) and isinstance(name := obj.get("__name__"), str) and (name in blocked or name.startswith(prefixes)):
                # A module's globals, alive through the functions defined in it.
                for key in [k for k, v in obj.items() if isinstance(v, JsProxy)]:
                    del obj[key]
            elif type(obj).__name__ == "JsLoader" and isinstance(getattr(obj, "jsproxy", None), JsProxy):
                obj.jsproxy = None
        install_event_loop()
        gc.collect()
        return len(removed)

    mod.run = run
    mod.configure = configure
    mod.reseed = reseed
    mod.close_bridge = close_bridge
    mod.format_error = _format_error
    mod.needs_heavy = needs_heavy
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
