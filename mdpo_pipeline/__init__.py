"""mdpo-pipeline: align vision-language models with mDPO, from raw preference data to registered adapters."""

import os

__version__ = "0.1.0"

#: Offline and private by default: nothing phones home, nothing is fetched from a hub unless the user sets these
#: variables explicitly (e.g. HF_HUB_OFFLINE=0 to download real weights or data).
PRIVATE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
}


def use_private_defaults() -> None:
    """Set PRIVATE_DEFAULTS where the environment leaves them unset. The entry points (the CLI, the Dagster
    definitions, the Ray worker loop) call it before anything imports a hub client; importing the package does not,
    so a notebook that imports only the loss keeps its own environment."""
    for key, value in PRIVATE_DEFAULTS.items():
        os.environ.setdefault(key, value)
