"""mdpo-pipeline: align vision-language models with mDPO, from raw preference data to registered adapters."""

import os as _os

# Offline and private by default: nothing phones home, nothing is fetched from a hub unless the user
# sets these variables explicitly (e.g. HF_HUB_OFFLINE=0 to download real weights or data).
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
}.items():
    _os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
