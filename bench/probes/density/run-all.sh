#!/bin/bash
# Runs every probe 3x, sequentially; results as JSON lines in $OUT (default /tmp/probe-density-results).
# SNAP: a Pyodide snapshot agentbox made, e.g. $AGENTBOX_CACHE_DIR/pyodide-314.0.7-<hash>.snapshot (npm run build first).
set -e
cd "$(dirname "$0")"
: "${SNAP:?set SNAP to an agentbox Pyodide snapshot file}"
OUT="${OUT:-/tmp/probe-density-results}"; mkdir -p "$OUT"
export PYODIDE_SNAPSHOT="$SNAP"
for r in 1 2 3; do
  for m in shared unshared; do node --expose-gc py-multi.mjs $m 10 $SNAP 400 >> $OUT/py-$m.jsonl; done
  for m in shared unshared runtimes; do node --expose-gc js-multi.mjs $m 10 1 200 >> $OUT/js-$m.jsonl; done
  node py-concurrent.mjs 20 1 >> $OUT/py-conc-1t.jsonl
  node py-concurrent.mjs 20 2 >> $OUT/py-conc-2t.jsonl
  uptime >> $OUT/load.txt
done

echo done
