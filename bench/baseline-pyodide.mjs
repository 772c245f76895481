// Baseline: what a Pyodide-in-Node tool pays per fresh process: cold loadPyodide() + print(1).
import { loadPyodide } from "pyodide";

const py = await loadPyodide();
py.runPython("print(1)");
