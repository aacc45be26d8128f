#!/usr/bin/env bash
# The one prepared device check: everything a GPU session should measure, in one call that stays under its time
# limit, printing one table and writing it as JSON (OUT/device_check.json).
#
#   bash benchmarks/device_check.sh                                  # GPU: --device cuda --size full
#   bash benchmarks/device_check.sh --device cpu --size tiny         # CI: the same script at toy size
#
# 1. installs the carried wheels in --wheels (default wheels/, made by benchmarks/device_wheels.sh: 25 MB of pinned
#    transformers, trl, datasets and what the GPU image lacks; no index, no dependencies; Ray left out);
# 2. training step, padded then packed (bench_train_step.py: DPO live ref, mDPO cached ref, mDPO live ref, the
#    paper's 4-call loop; full = random-initialised LLaVA-1.5-7B and Qwen2.5-VL-7B, bf16, LoRA r64, checkpointing);
# 3. batched greedy generation (bench_generate.py: full = LLaVA-1.5-7B, batch 64, 96 new tokens);
# 4. the user's path without Dagster (bench_user_path.py: a mid checkpoint, data stages, base_model,
#    reference_logprobs, `mdpo train`, benchmark answers scored).
# A phase that fails or runs out of its share of --time-limit is reported as such; the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda SIZE=full OUT=device_check WHEELS=wheels LIMIT=520 PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --time-limit) LIMIT=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    *) echo "device_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$SIZE" in full|tiny) ;; *) echo "device_check: --size is full or tiny, got $SIZE" >&2; exit 2 ;; esac
mkdir -p "$OUT"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-deps --no-index "$WHEELS"/*.whl || { echo "device_check: wheels failed" >&2; exit 1; }
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package from this tree, not installed

if [ "$SIZE" = full ]; then
  train=(--device cuda --size full --families llava-1.5,qwen2.5-vl --steps 3 --warmup 1)
  generate=(--device cuda --size full --batch 64 --new-tokens 96 --prompts 128)
  user_path=(--size mid --steps 20 --items 16)
else
  train=(--device cpu --families tiny --steps 1 --warmup 0)
  generate=(--device cpu --size tiny --batch 4 --new-tokens 8 --prompts 8)
  user_path=(--size tiny --steps 2 --pairs 16 --items 4)
fi

# Each phase gets its share of the limit (training 2 × 25 %, generation 10 %, the user's path 40 %).
phase() {  # name, share in percent, command...
  local name=$1 share=$2; shift 2
  local seconds=$((LIMIT * share / 100))
  echo "== $name (up to ${seconds} s)"
  timeout --kill-after=10 "$seconds" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "{\"phase\": \"$name\", \"rc\": $rc}" > "$OUT/$name.rc.json"
}
phase train_padded 25 "$PY" benchmarks/bench_train_step.py "${train[@]}" --no-packed-rows \
  --time-limit $((LIMIT * 25 / 100 - 15)) --json "$OUT/train_padded.json"
phase train_packed 25 "$PY" benchmarks/bench_train_step.py "${train[@]}" --packed-rows \
  --time-limit $((LIMIT * 25 / 100 - 15)) --json "$OUT/train_packed.json"
phase generate 10 "$PY" benchmarks/bench_generate.py "${generate[@]}" --json "$OUT/generate.json"
phase user_path 40 "$PY" benchmarks/bench_user_path.py "${user_path[@]}" --json "$OUT/user_path.json"

"$PY" - "$OUT" "$DEVICE" "$SIZE" <<'EOF'
import json, sys
from pathlib import Path

out, device, size = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def read(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None
try:
    import torch
    name = torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else "cpu"
except Exception as e:  # noqa: BLE001 - the table still reports the phases
    name = f"unknown ({e})"
phases = {p: json.loads((out / f"{p}.rc.json").read_text())["rc"]
          for p in ("train_padded", "train_packed", "generate", "user_path") if (out / f"{p}.rc.json").is_file()}
report = {"device": name, "size": size, "phases_rc": phases, "train": (read("train_padded") or []) + (
    read("train_packed") or []), "generate": read("generate"), "user_path": read("user_path")}
print(f"\ndevice check on {name} ({size}); phase exit codes {phases} (124: its time share ran out)")
print(f"{'model':<12} {'variant':<20} {'rows':<7} {'s/step':>7} {'tok/s':>9} {'MFU':>6} {'peak GiB':>8}")
for r in report["train"]:
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
    peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
    print(f"{r['model']:<12} {r['variant']:<20} {'packed' if r['packed_rows'] else 'padded':<7} "
          f"{r['s_per_step']:7.3f} {r['tokens_per_s']:9.0f} {mfu:>6} {peak:>8}")
if report["generate"]:
    g = report["generate"]
    print(f"generation {g['model']}: {g['answers_per_s']} answers/s, {g['new_tokens_per_s']} new tok/s "
          f"(batch {g['batch']}, {g['max_new_tokens']} new tokens)")
if report["user_path"]:
    u = report["user_path"]
    print(f"user path {u['model']}: " + ", ".join(f"{k} {v}" for k, v in u["timings_s"].items()))
(out / "device_check.json").write_text(json.dumps(report, indent=1) + "\n")
sys.exit(0 if phases and all(rc == 0 for rc in phases.values()) else 1)
EOF
