"""AMBER: generative CHAIR / Cover / Hal / Cog and discriminative yes/no precision, recall and F1.

Follows AMBER's metrics (docs/benchmarks.md, "AMBER") and its data layout (``data/annotations.json``,
``data/relation.json``, ``data/safe_words.txt``, ``data/query/*.json``, ``image/AMBER_{id}.jpg``); ShapeWorld's
AMBER split is written in the same layout.

Generative, per answer: its nouns, kept only when they are AMBER object words (relation.json's keys
and their associated words) and not safe words. A kept noun that names a truth object (or a word
associated with one) covers it; any other kept noun is hallucinated, and when it names a ``hallu``
object (or an associated word) that object counts as "cognised". CHAIR = hallucinated / kept nouns;
Cover = covered truth objects / truth objects; Hal = answers with a hallucinated noun / answers;
Cog = mentioned hallu objects / hallu objects. Repeated nouns count each time (as the official
scorer does); an image's truth and hallu lists are de-duplicated.

Discriminative: an answer counts only when it starts with "yes" or "no" (case and punctuation aside);
"no" is the positive class. Precision = correct "no" / answered "no"; recall = correct "no" / truth
"no"; an unparseable answer is wrong and counted separately.

All metrics are fractions in [0, 1] (AMBER prints ×100); an empty denominator gives 0.

Two scoring modes (``mode=``):

- ``offline`` (default; the ShapeWorld split): the rules above. Noun extraction needs no tagger data: an
  object word counts as a noun unless its context makes it a verb ("to watch", "they rock", "can" as a
  modal before a verb or adverb). Pass ``extract`` to use any other tagger or an LLM.
- ``official``: junyangwang0410/AMBER ``inference.py`` reproduced exactly, aggregate and per item: NLTK
  ``word_tokenize`` + ``pos_tag`` + ``WordNetLemmatizer`` nouns (case-sensitive, NLTK data found through
  ``NLTK_DATA`` / ``nltk.data.path``), safe words in the CHAIR denominator, a repeated truth/hallu object
  counted per position, answers scored only when exactly "Yes"/"No", the 689 ``relation`` items under
  Relation, and the printed ×100 values with its +0.001 denominators and F1 from rounded P/R (``official``
  dict of each result). The word-vector rescue (spaCy similarity > 0.8) is applied when a spaCy model
  with vectors loads, and reported either way.

The package, by job: ``data`` (loading AMBER's files, reading responses), ``generative`` (CHAIR / Cover /
Hal / Cog, both modes), ``discriminative`` (yes/no precision, recall and F1, both modes), ``nltk_tools``
(the NLTK data official mode needs), ``common`` (the modes and what both tasks share) and ``scores`` (both
tasks at once).
"""

from __future__ import annotations

from mdpo_pipeline.core.eval.amber.data import (
    AMBER_SOURCE,
    DISCRIMINATIVE_TYPES,
    AmberData,
    AmberQuery,
    load_amber,
)
from mdpo_pipeline.core.eval.amber.discriminative import (
    DIMENSIONS,
    AmberDiscriminativeResult,
    AmberOfficialYesNo,
    YesNoScores,
    amber_discriminative,
    parse_yes_no,
)
from mdpo_pipeline.core.eval.amber.generative import (
    OFFICIAL_SIMILARITY,
    OFFICIAL_SPACY_MODEL,
    AmberAnswer,
    AmberGenerativeResult,
    AmberOfficialAnswer,
    NounExtractor,
    Similarity,
    amber_generative,
    amber_nouns,
    spacy_similarity,
)
from mdpo_pipeline.core.eval.amber.nltk_tools import NLTK_INSTALL, NLTKDataMissing
from mdpo_pipeline.core.eval.amber.scores import AmberResult, amber_scores

__all__ = [
    "AMBER_SOURCE",
    "DIMENSIONS",
    "DISCRIMINATIVE_TYPES",
    "NLTK_INSTALL",
    "OFFICIAL_SIMILARITY",
    "OFFICIAL_SPACY_MODEL",
    "AmberAnswer",
    "AmberData",
    "AmberDiscriminativeResult",
    "AmberGenerativeResult",
    "AmberOfficialAnswer",
    "AmberOfficialYesNo",
    "AmberQuery",
    "AmberResult",
    "NLTKDataMissing",
    "NounExtractor",
    "Similarity",
    "YesNoScores",
    "amber_discriminative",
    "amber_generative",
    "amber_nouns",
    "amber_scores",
    "load_amber",
    "parse_yes_no",
    "spacy_similarity",
]
