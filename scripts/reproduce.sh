#!/usr/bin/env bash
# `make reproduce`: the experiment grid of params.yaml:experiment through Dagster, then the paper's claims checked.
#   1. the data, base model and reference cache, unless `make demo` made them already;
#   2. experiment_grid: every cell of the grid becomes a partition of grid_cells;
#   3. every cell still to run (`mdpo grid pending`), $GRID_PARALLEL runs side by side: a cell that already
#      finished with today's settings is reused, never run again;
#   4. claims_report: artifacts/grid/<name>/report/claims.md (+ claims.json, plots), and the claims table here.
# Runs write their output to artifacts/logs/grid/<cell>.log; the terminal gets one line per run.
set -euo pipefail

DAGSTER=${DAGSTER:-.venv/bin/dagster}
MDPO=${MDPO:-.venv/bin/mdpo}
PARALLEL=${GRID_PARALLEL:-2}
LOGS=artifacts/logs/grid
# One partition per run and its steps in order, in one process (saves the import per step).
IN_PROCESS='{"execution": {"config": {"in_process": {}}}}'
# Runs side by side share the cores: torch's OpenMP threads must sleep, not spin, while they wait (scripts/demo.sh).
export OMP_WAIT_POLICY=PASSIVE
# The cores shared out among the runs (at least 2 threads each: what the measured 2-core grid ran with).
threads=$(( $(nproc) / PARALLEL )); (( threads >= 2 )) || threads=2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}

materialize() { "$DAGSTER" asset materialize -m mdpo_pipeline.definitions --config-json "$IN_PROCESS" "$@"; }
mkdir -p "$LOGS"
start=$SECONDS

if [[ ! -f data/reference_logprobs/summary.json ]]; then
  echo "== data, base model and reference cache (not made yet: \`make demo\` makes them too)"
  materialize --select 'group:data or key:base_model or key:reference_logprobs' > "$LOGS/upstream.log" 2>&1 \
    || { tail -n 60 "$LOGS/upstream.log"; exit 1; }
fi

materialize --select experiment_grid > "$LOGS/experiment_grid.log" 2>&1 || { tail -n 60 "$LOGS/experiment_grid.log"; exit 1; }
mapfile -t cells < <("$MDPO" grid cells)
mapfile -t pending < <("$MDPO" grid pending)
echo "== experiment grid: ${#cells[@]} cells, $((${#cells[@]} - ${#pending[@]})) finished before, ${#pending[@]} to run" \
     "($PARALLEL side by side)"

declare -A pids=() started=()
failed=0
finish() {  # wait for any one run to end; report every run that ended
  local key pid done_key=""
  wait -n "${pids[@]}" 2>/dev/null || true
  for key in "${!pids[@]}"; do
    pid=${pids[$key]}
    if ! kill -0 "$pid" 2>/dev/null; then
      if wait "$pid"; then
        printf '  %-40s done in %4d s\n' "$key" "$((SECONDS - started[$key]))"
      else
        printf '  %-40s FAILED   (%s); its end:\n' "$key" "$LOGS/$key.log"
        tail -n 30 "$LOGS/$key.log" | sed 's/^/    /'
        failed=1
      fi
      unset "pids[$key]"
      done_key=$key
    fi
  done
  [[ -n $done_key ]]
}
for key in "${pending[@]}"; do
  while ((${#pids[@]} >= PARALLEL)); do finish || true; done
  "$DAGSTER" asset materialize -m mdpo_pipeline.definitions --select grid_cells --partition "$key" \
    --config-json "$IN_PROCESS" > "$LOGS/$key.log" 2>&1 &
  pids[$key]=$!
  started[$key]=$SECONDS
done
while ((${#pids[@]})); do finish || true; done

echo "== claims report"
materialize --select claims_report > "$LOGS/claims_report.log" 2>&1 || { tail -n 60 "$LOGS/claims_report.log"; exit 1; }
name=$("$MDPO" grid path)
echo
# The claims table (the report's "## Claims" section); the whole report is in claims.md.
awk '/^## Claims/{on=1; next} on && /^## /{exit} on' "$name"
echo "Whole report: $name   (tables, paired differences, matched-recall CHAIR, probe, plots)"
echo "Grid time: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
exit $failed
