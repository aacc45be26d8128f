"""The tiny ShapeWorld LLaVA as a model preset: the default base model, added to the training layer's presets.

Importing this module registers the preset (``training.presets.register_preset``); the pipeline's settings, the CLI
and the ShapeWorld model builders import it, so every process that can be asked for ``shapeworld-tiny`` knows it.
Its CNN vision tower is registered with transformers' Auto classes only when a model loads (``setup``): that
imports torch, and checking settings must not.
"""

from __future__ import annotations

from mdpo_pipeline.training.presets import ModelPreset, TrainingDefaults, register_preset

#: The tiny model learns in minutes on CPU: larger lr and batch, one epoch, no memory savers.
#: lr 5e-4 because its rank-8 LoRA barely moves at 5e-5 in one epoch (1,500 pairs: reward margin 0.03 vs 0.28).
TINY_TRAINING = TrainingDefaults(
    epochs=1, per_device_batch_size=16, grad_accum=1, learning_rate=5e-4, bf16=False,
    gradient_checkpointing=False, max_length=256,
)


def register_vision_tower() -> None:
    """Make transformers able to build the CNN tower a saved tiny model names in its config."""
    from mdpo_pipeline.shapeworld import vision  # noqa: F401  (registers on import, as transformers' Auto classes do)


SHAPEWORLD_TINY = register_preset(ModelPreset(
    "shapeworld-tiny", None, "shapeworld", dtype="float32", lora_r=8, lora_alpha=16, training=TINY_TRAINING,
    classes=("LlavaForConditionalGeneration", "LlavaProcessor"), setup=register_vision_tower,
    note="the tiny LLaVA after ShapeWorld SFT, written by mdpo_pipeline.shapeworld.sft.train_base_model",
))
