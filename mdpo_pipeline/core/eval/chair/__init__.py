"""Object HalBench's rule-based CHAIR: a CHAIR synonym table, object extraction, CHAIR_s / CHAIR_i / recall.

Two scoring modes:

``offline`` (the default; ShapeWorld and anything without NLTK data) follows the CHAIR scorer
(Rohrbach et al. 2018) as Object HalBench uses it (docs/benchmarks.md, "Object HalBench (CHAIR)"):

- an answer is tokenised and lower-cased, every word is tried as written and as its noun lemma
  (``lemminflect``, which ships its data), and phrases are matched longest first, so "half moon"
  is one mention of ``half moon`` and never also a ``moon``;
- each matched phrase maps through the synonym list to its canonical category;
- ground truth of an image = its COCO instance categories ∪ the categories found the same way in its
  reference captions;
- CHAIR_s = answers with ≥ 1 hallucinated mention / answers; CHAIR_i = hallucinated mentions / all
  mentions (repeats count, as in CHAIR); recall = distinct truth categories mentioned / truth
  categories, summed over answers.

``official`` reproduces RLHF-V's ``eval/eval_gpt_obj_halbench.py`` rule-based path (no ``--use_gpt``) and its
summariser exactly, per answer and in aggregate: NLTK ``word_tokenize`` and WordNet lemmas, RLHF-V's
``synonyms_refine.txt`` and double-word table, COCO train2014 + val2014 annotations. It needs NLTK's
``punkt_tab`` and ``wordnet`` data (found through NLTK_DATA / ``nltk.data.path``).

All metrics are fractions in [0, 1] (papers print them ×100); an empty denominator gives 0.
Pure Python: no Dagster, no torch.

The package, by job: ``synonyms`` (tokenising, noun forms and the CHAIR synonym table), ``scoring`` (the
offline CHAIR_s / CHAIR_i / recall), ``official`` (RLHF-V's rule-based scorer reproduced, on NLTK),
``halbench`` (Object HalBench's prompt, answer and COCO annotation files, and the benchmark that scores in
either mode) and ``extraction`` (the LLM object extractor).
"""

from __future__ import annotations

from mdpo_pipeline.core.eval.chair.extraction import llm_extractor, object_extraction_prompt, parse_object_list
from mdpo_pipeline.core.eval.chair.halbench import (
    AnswerRecord,
    HalBenchItem,
    ObjectHalBench,
    coco_annotation_folder,
    load_object_halbench,
    load_object_halbench_coco,
    object_truth,
    official_truth,
    read_answers,
    read_coco_annotations,
    read_questions,
)
from mdpo_pipeline.core.eval.chair.official import (
    NLTK_INSTALL,
    OfficialChairRules,
    OfficialWords,
    clean_answer,
    official_chair_scores,
    official_nlp,
    official_print_metrics,
    official_summary,
)
from mdpo_pipeline.core.eval.chair.scoring import ChairAnswer, ChairResult, Extractor, chair_scores
from mdpo_pipeline.core.eval.chair.synonyms import (
    COCO_DOUBLE_WORDS,
    COCO_DROP_WHEN,
    Mention,
    SynonymTable,
    expand_tokens,
    noun_forms,
    tokenize,
)

__all__ = [
    "COCO_DOUBLE_WORDS",
    "COCO_DROP_WHEN",
    "NLTK_INSTALL",
    "AnswerRecord",
    "ChairAnswer",
    "ChairResult",
    "Extractor",
    "HalBenchItem",
    "Mention",
    "ObjectHalBench",
    "OfficialChairRules",
    "OfficialWords",
    "SynonymTable",
    "chair_scores",
    "clean_answer",
    "coco_annotation_folder",
    "expand_tokens",
    "llm_extractor",
    "load_object_halbench",
    "load_object_halbench_coco",
    "noun_forms",
    "object_extraction_prompt",
    "object_truth",
    "official_chair_scores",
    "official_nlp",
    "official_print_metrics",
    "official_summary",
    "official_truth",
    "parse_object_list",
    "read_answers",
    "read_coco_annotations",
    "read_questions",
    "tokenize",
]
