#!/usr/bin/env bash
# The default pipeline end to end, as `make demo` runs it, through the Dagster CLI (same runs as the UI would start):
#   1. the data and the base model, in one run (the data stages run beside the base model's SFT);
#   2. the reference cache beside the base model's own scores (neither needs the other);
#   3. every method's adapter, its scores and its gate check: one run per method, side by side;
#   4. the comparison report and the champion.
# Runs of one phase write their output to artifacts/logs/<model>.<phase>.log; the terminal gets one line per run.
# A model that fails the promotion gate fails its run but has its scores: the report shows it, the champion skips it.
set -euo pipefail

DAGSTER=${DAGSTER:-.venv/bin/dagster}
MODELS=(${DEMO_MODELS:-base dpo mdpo})
LOGS=artifacts/logs
# One partition per run and its steps in order: a step needs no process of its own (saves the import per step).
IN_PROCESS='{"execution": {"config": {"in_process": {}}}}'
# Runs side by side share the cores: torch's OpenMP threads must sleep, not spin, while they wait, or two runs on two
# cores spin each other out (measured: DPO + mDPO training side by side 153 s with spinning threads, 57 s with
# sleeping ones, 88 s one after the other). The thread counts stay the same, and so do the numbers.
SIDE_BY_SIDE_ENV=(env OMP_WAIT_POLICY=PASSIVE)

materialize() { "$DAGSTER" asset materialize -m mdpo_pipeline.definitions "$@"; }

# side_by_side PHASE SELECTION MODEL...: one run per model, all at once; fails when one fails, except a gate that
# blocked a model whose scores were written (benchmark_scores runs).
side_by_side() {
  local phase=$1 selection=$2; shift 2
  local -A pids=() started=()
  local model failed=0
  for model in "$@"; do
    [[ $selection == *benchmark_scores* ]] && rm -f "artifacts/eval/$model/scores.json"
    "${SIDE_BY_SIDE_ENV[@]}" "$DAGSTER" asset materialize -m mdpo_pipeline.definitions --select "$selection" \
      --partition "$model" --config-json "$IN_PROCESS" > "$LOGS/$model.$phase.log" 2>&1 &
    pids[$model]=$!
    started[$model]=$SECONDS
  done
  for model in "$@"; do
    local log="$LOGS/$model.$phase.log" took
    if wait "${pids[$model]}"; then
      took=$((SECONDS - started[$model]))
      printf '  %-22s %-16s done in %3d s   (%s)\n' "$model" "$phase" "$took" "$log"
    elif [[ $selection == *benchmark_scores* && -f artifacts/eval/$model/scores.json ]]; then
      printf '  %-22s %-16s scored; its gate check blocked it   (%s)\n' "$model" "$phase" "$log"
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
materialize --select 'group:data or key:base_model' > "$LOGS/upstream.log" 2>&1 \
  || { tail -n 60 "$LOGS/upstream.log"; exit 1; }
echo "  data and base_model done   ($LOGS/upstream.log)"

echo "== reference cache, beside the base model's scores"
reference() {
  "${SIDE_BY_SIDE_ENV[@]}" "$DAGSTER" asset materialize -m mdpo_pipeline.definitions --select 'key:reference_logprobs' \
    --config-json "$IN_PROCESS" > "$LOGS/reference.log" 2>&1
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
materialize --select 'key:comparison_report or key:champion' --config-json "$IN_PROCESS" > "$LOGS/report.log" 2>&1 \
  || { tail -n 60 "$LOGS/report.log"; exit 1; }
echo
cat artifacts/eval/comparison.md
