#!/usr/bin/env bash
# The wheels device_check.sh installs on the GPU machine, downloaded here at the versions constraints.txt pins.
# That machine reaches no index and has Python 3.12 with torch, accelerate, peft, safetensors, tokenizers, numpy,
# pyarrow, scipy, matplotlib, pillow, pyyaml and tqdm (its image's list); what the package needs beyond those, and
# the pinned versions of what it must not take from the image (transformers, huggingface_hub), is fetched here. Ray
# is left out (its wheel alone is larger than what can be carried).
#
#   bash benchmarks/device_wheels.sh [DIR]      # default wheels/; then carry DIR with the device run
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-wheels}
packages=(transformers trl datasets huggingface_hub tokenizers dill multiprocess lemminflect nltk pydantic
          pydantic_core annotated-types typing-inspection dagster-pipes regex filelock)
pins=()
for name in "${packages[@]}"; do
  pin=$(grep -iE "^${name}==" constraints.txt || true)
  [ -n "$pin" ] || { echo "device_wheels: $name is not pinned in constraints.txt" >&2; exit 1; }
  pins+=("$pin")
done
mkdir -p "$out"
"${PIP:-pip}" download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$out" \
  "${pins[@]}"
du -sh "$out"
