#!/usr/bin/env bash
# The default pipeline end to end, as `make demo` runs it, through the Dagster CLI (same runs as the UI would start):
#   1. the data and the base model, in one run (the data stages run beside the base model's SFT);
#   2. the reference cache beside the base model's own scores (neither needs the other);
#   3. every method's adapter, its scores and its gate check: one run per method, side by side;
#   4. the comparison report and the champion.
# Runs of one phase write their output to artifacts/logs/<model>.<phase>.log; the terminal gets one line per run.
# A model that fails the promotion gate is a finished, scored model: its check warns, its run succeeds, the report
# shows it and the champion skips it.
set -euo pipefail

DAGSTER=${DAGSTER:-.venv/bin/dagster}
MODELS=(${DEMO_MODELS:-base dpo mdpo})
LOGS=artifacts/logs
# Dagster's console logger at INFO: its DEBUG events (every step's start, outputs, resource set-up) buried the runs'
# own lines in the logs.
LOGGERS='"loggers": {"console": {"config": {"log_level": "INFO"}}}'
QUIET="{$LOGGERS}"
# One partition per run and its steps in order: a step needs no process of its own (saves the import per step).
IN_PROCESS="{\"execution\": {\"config\": {\"in_process\": {}}}, $LOGGERS}"
# A progress bar writing into a log file redraws at most every 20 s (tqdm reads TQDM_* as its defaults), not ten
# times a second.
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-20}
# The CLI's notice that `asset materialize` has a successor, printed into every log.
export PYTHONWARNINGS=${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore::Warning:click.core
# Runs side by side share the cores: torch's OpenMP threads must sleep, not spin, while they wait, or two runs on two
# cores spin each other out (measured: DPO + mDPO training side by side 153 s with spinning threads, 57 s with
# sleeping ones, 88 s one after the other). The thread counts stay the same, and so do the numbers.
SIDE_BY_SIDE_ENV=(env OMP_WAIT_POLICY=PASSIVE)

# logged LOG COMMAND...: COMMAND's output into LOG, each progress-bar redraw (\r) on a line of its own; its status
# (pipefail).
logged() {
  local log=$1; shift
  "$@" 2>&1 | stdbuf -oL tr '\r' '\n' > "$log"
}

materialize() { "$DAGSTER" asset materialize -m mdpo_pipeline.definitions "$@"; }

# side_by_side PHASE SELECTION MODEL...: one run per model, all at once; fails when one fails.
side_by_side() {
  local phase=$1 selection=$2; shift 2
  local -A pids=() started=()
  local model failed=0
  for model in "$@"; do
    logged "$LOGS/$model.$phase.log" "${SIDE_BY_SIDE_ENV[@]}" "$DAGSTER" asset materialize \
      -m mdpo_pipeline.definitions --select "$selection" --partition "$model" --config-json "$IN_PROCESS" &
    pids[$model]=$!
    started[$model]=$SECONDS
  done
  for model in "$@"; do
    local log="$LOGS/$model.$phase.log" took
    if wait "${pids[$model]}"; then
      took=$((SECONDS - started[$model]))
      printf '  %-22s %-16s done in %3d s   (%s)\n' "$model" "$phase" "$took" "$log"
    else
      printf '  %-22s %-16s FAILED   (%s); its end:\n' "$model" "$phase" "$log"
      tail -n 40 "$log" | sed 's/^/    /'
      failed=1
    fi
  done
  return $failed
}

mkdir -p "$LOGS"
methods=()
for model in "${MODELS[@]}"; do [[ $model == base ]] || methods+=("$model"); done

echo "== data and base model (the longest part: the tiny VLM's supervised fine-tune, ~3 min on 2 cores)"
logged "$LOGS/upstream.log" materialize --select 'group:data or key:base_model' --config-json "$QUIET" \
  || { tail -n 60 "$LOGS/upstream.log"; exit 1; }
echo "  data and base_model done   ($LOGS/upstream.log)"

echo "== reference cache, beside the base model's scores"
reference() {
  logged "$LOGS/reference.log" "${SIDE_BY_SIDE_ENV[@]}" "$DAGSTER" asset materialize -m mdpo_pipeline.definitions \
    --select 'key:reference_logprobs' --config-json "$IN_PROCESS"
}
reference & ref_pid=$!
base_ok=0
if [[ " ${MODELS[*]} " == *" base "* ]]; then
  side_by_side scores 'key:adapters or key:benchmark_scores' base || base_ok=1
fi
wait "$ref_pid" || { tail -n 60 "$LOGS/reference.log"; exit 1; }
echo "  reference_logprobs done   ($LOGS/reference.log)"
[[ $base_ok == 0 ]] || exit 1

if ((${#methods[@]})); then
  # One run per method trains its adapter and scores it: one model scores while the other still trains.
  echo "== adapters, their scores and gate checks, side by side"
  side_by_side train-score 'key:adapters or key:benchmark_scores' "${methods[@]}"
fi

echo "== comparison report and champion"
logged "$LOGS/report.log" materialize --select 'key:comparison_report or key:champion' --config-json "$IN_PROCESS" \
  || { tail -n 60 "$LOGS/report.log"; exit 1; }
echo
cat artifacts/eval/comparison.md
echo
# The registry decision as the champion asset wrote it: reading MLflow here would cost seconds of imports.
python3 - artifacts/eval/champion.json <<'PY'
import json
import sys

result = json.load(open(sys.argv[1]))
if result["champion_after"]:
    print(f"Champion: {result['champion_method']}, version {result['champion_after']} of the registered model "
          f"{result['model']} (alias 'champion')")
else:
    print(f"No champion: no adapter passed the promotion gate (registered model {result['model']})")
PY
# The data versions: what `dvc status` says of the stages just materialized (each was recorded with `dvc commit`).
if [[ -n ${DVC:-} ]]; then
  echo
  echo "DVC: $("$DVC" status 2>&1 | head -n 20)"
fi
cat <<NEXT

Next:
  make reproduce   # the experiment grid (5 methods × 3 seeds × 2 base models) and the paper's claims checked, ~13 min on 2 cores
  make dev         # Dagster UI on http://127.0.0.1:3000: runs, assets, checks, metadata (links to MLflow)
  make mlflow-ui   # MLflow UI on http://127.0.0.1:5000: the runs side by side, the registry and its aliases
Every run's log: $LOGS/
NEXT
