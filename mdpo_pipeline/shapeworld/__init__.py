"""ShapeWorld: the embedded offline dataset, written in the real VLFeedback and benchmark formats.

Synthetic images of known objects, with simulated model answers rated against the ground truth, so
the whole pipeline runs (and its claims can be checked) without downloading anything.
"""

from mdpo_pipeline.shapeworld.config import DEFAULT_SOURCE_MIX, KINDS, ShapeWorldConfig
from mdpo_pipeline.shapeworld.feedback import MODELS, STYLE_MARKERS, has_text_cue, make_instruction
from mdpo_pipeline.shapeworld.generate import (
    MMHAL_TYPES,
    OBJECT_HALBENCH_PROMPTS,
    generate_benchmarks,
    generate_vlfeedback,
)
from mdpo_pipeline.shapeworld.world import (
    CATEGORIES,
    COLOURS,
    COOCCURRENCE,
    LOOKALIKES,
    RELATIONS,
    VOCABULARY,
    Scene,
    SceneObject,
    render_scene,
    sample_scene,
    synonym_lines,
)

__all__ = [
    "CATEGORIES",
    "COLOURS",
    "COOCCURRENCE",
    "DEFAULT_SOURCE_MIX",
    "KINDS",
    "LOOKALIKES",
    "MMHAL_TYPES",
    "MODELS",
    "OBJECT_HALBENCH_PROMPTS",
    "RELATIONS",
    "STYLE_MARKERS",
    "VOCABULARY",
    "Scene",
    "SceneObject",
    "ShapeWorldConfig",
    "generate_benchmarks",
    "generate_vlfeedback",
    "has_text_cue",
    "make_instruction",
    "render_scene",
    "sample_scene",
    "synonym_lines",
]
