"""Offline CHAIR: CHAIR_s, CHAIR_i and object recall of answers against each image's truth categories
(docs/benchmarks.md, "Object HalBench (CHAIR)"), with the per-answer detail; objects found by the synonym table's
rules or by an extractor."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mdpo_pipeline.core.eval.chair.synonyms import Mention, SynonymTable
from mdpo_pipeline.core.eval.common import ratio

#: An LLM (or any) object extractor: answer text -> the object words or phrases it names.
Extractor = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class ChairAnswer:
    """One answer's detail: what it mentions, which mentions are hallucinated, which truths it covers."""

    mentioned: tuple[str, ...]  #: canonical categories in order, repeats kept
    words: tuple[str, ...]  #: the table phrases matched, aligned with ``mentioned``
    hallucinated: tuple[str, ...]  #: mentions whose category is not in the truth, repeats kept
    covered: tuple[str, ...]  #: distinct truth categories mentioned, sorted
    truth: tuple[str, ...]  #: the image's truth categories, sorted
    unmatched: tuple[str, ...] = ()  #: extractor outputs that name no category in the list
    image_id: int | None = None  #: set when scored through an ObjectHalBench
    # Official mode only: the answer after RLHF-V's cleaning, its word list after merging (the official
    # "words") and the official hallucination_idxs, kept as the official code fills them.
    caption: str | None = None
    tokens: tuple[str, ...] = ()
    hallucination_idxs: tuple[int, ...] = ()

    @property
    def chair_i(self) -> float:
        """This answer's hallucinated mentions / mentions."""
        return ratio(len(self.hallucinated), len(self.mentioned))

    @property
    def hallucinated_words(self) -> tuple[str, ...]:
        """The matched words of the hallucinated mentions, aligned with ``hallucinated``."""
        truth = set(self.truth)
        return tuple(w for w, c in zip(self.words, self.mentioned) if c not in truth)

    def as_dict(self) -> dict:
        """JSON-ready form."""
        out: dict[str, Any] = {} if self.image_id is None else {"image_id": self.image_id}
        out |= {
            "mentioned": list(self.mentioned),
            "words": list(self.words),
            "hallucinated": list(self.hallucinated),
            "covered": list(self.covered),
            "truth": list(self.truth),
            "unmatched": list(self.unmatched),
            "chair_s": int(bool(self.hallucinated)),
            "chair_i": self.chair_i,
        }
        if self.caption is not None:
            out |= {"caption": self.caption, "tokens": list(self.tokens),
                    "hallucination_idxs": list(self.hallucination_idxs)}
        return out

    def official_record(self) -> dict:
        """This answer under the official scorer's names (words, [word, class] pairs, gt_objects, ...)."""
        if self.caption is None:
            raise ValueError("official_record needs an answer scored in official mode")
        return {
            "image_id": self.image_id,
            "caption": self.caption,
            "words": list(self.tokens),
            "mentioned": [[w, c] for w, c in zip(self.words, self.mentioned)],
            "hallucinated": [[w, c] for w, c in zip(self.hallucinated_words, self.hallucinated)],
            "hallucination_idxs": list(self.hallucination_idxs),
            "gt_objects": list(self.truth),
            "correct_classes": list(self.covered),
            "chair_s": int(bool(self.hallucinated)),
            "chair_i": self.chair_i,
        }


@dataclass(frozen=True)
class ChairResult:
    """CHAIR_s, CHAIR_i and object recall over a set of answers, with the counts behind them."""

    chair_s: float
    chair_i: float
    recall: float
    n_answers: int
    n_hallucinated_answers: int
    n_mentions: int
    n_hallucinated_mentions: int
    n_truth: int
    n_covered: int
    extractor: str  #: "rule" or "custom" (an ``extract`` callable, e.g. an LLM judge)
    per_answer: tuple[ChairAnswer, ...] = ()
    mode: str = "offline"  #: "offline" (lemminflect rules) or "official" (RLHF-V's scorer reproduced)
    #: Official mode: the official overall_metrics (CHAIRs, CHAIRs_refine, CHAIRi, obj_rec, ...) plus integer
    #: ``counts``, and the summariser's lines (Response Hall, Object Hall, Object Recall, ... as printed).
    official: Mapping[str, Any] | None = None
    official_summary: Mapping[str, str] | None = None

    def as_dict(self, detail: bool = False) -> dict:
        """Metrics and counts (flat, for logging); ``detail`` adds the per-answer records."""
        out = {k: getattr(self, k) for k in (
            "chair_s", "chair_i", "recall", "n_answers", "n_hallucinated_answers", "n_mentions",
            "n_hallucinated_mentions", "n_truth", "n_covered", "extractor", "mode",
        )}
        if self.official is not None:
            out["official"] = json.loads(json.dumps(self.official))
            out["official_summary"] = dict(self.official_summary or {})
        if detail:
            out["per_answer"] = [a.as_dict() for a in self.per_answer]
        return out


def _extracted_mentions(answer: str, extract: Extractor, table: SynonymTable) -> tuple[list[Mention], list[str]]:
    phrases = extract(answer)
    if isinstance(phrases, str) or not all(isinstance(p, str) for p in phrases):
        raise TypeError(f"extract must return a list of strings, got {phrases!r}")
    mentions: list[Mention] = []
    unmatched: list[str] = []
    for phrase in phrases:
        # The same matcher maps "two red half moons" -> half moon; a non-object phrase matches nothing.
        found = table.mentions(phrase)
        mentions += found
        if not found:
            unmatched.append(phrase)
    return mentions, unmatched


def chair_scores(
    answers: Sequence[str],
    truths: Sequence[Iterable[str]],
    table: SynonymTable,
    *,
    extract: Extractor | None = None,
) -> ChairResult:
    """CHAIR_s, CHAIR_i and recall of ``answers`` against per-answer truth categories (docs/benchmarks.md,
    "Object HalBench (CHAIR)").

    Truth entries may be any phrase of the table ("moon" counts as ``half moon``). ``extract``, when
    given, replaces rule-based extraction: it returns the objects an answer names (e.g. from an LLM),
    and each is mapped through the synonym table; phrases naming no category are reported as unmatched.
    """
    if isinstance(answers, str) or len(answers) != len(truths):
        raise ValueError(f"answers and truths must be sequences of equal length ({len(answers)} vs {len(truths)})")
    per_answer = []
    for answer, truth in zip(answers, truths):
        if not isinstance(answer, str):
            raise TypeError(f"answers must be strings, got {type(answer).__name__}")
        if isinstance(truth, str):
            raise TypeError(f"each truth must be a collection of object names, got the string {truth!r}")
        truth_set = {table.canonical(t) for t in truth}
        if extract is None:
            mentions, unmatched = table.mentions(answer), []
        else:
            mentions, unmatched = _extracted_mentions(answer, extract, table)
        mentioned = [m.category for m in mentions]
        per_answer.append(
            ChairAnswer(
                mentioned=tuple(mentioned),
                words=tuple(m.phrase for m in mentions),
                hallucinated=tuple(c for c in mentioned if c not in truth_set),
                covered=tuple(sorted(truth_set.intersection(mentioned))),
                truth=tuple(sorted(truth_set)),
                unmatched=tuple(unmatched),
            )
        )
    n_mentions = sum(len(a.mentioned) for a in per_answer)
    n_halluc = sum(len(a.hallucinated) for a in per_answer)
    n_bad = sum(bool(a.hallucinated) for a in per_answer)
    n_truth = sum(len(a.truth) for a in per_answer)
    n_covered = sum(len(a.covered) for a in per_answer)
    return ChairResult(
        chair_s=ratio(n_bad, len(per_answer)),
        chair_i=ratio(n_halluc, n_mentions),
        recall=ratio(n_covered, n_truth),
        n_answers=len(per_answer),
        n_hallucinated_answers=n_bad,
        n_mentions=n_mentions,
        n_hallucinated_mentions=n_halluc,
        n_truth=n_truth,
        n_covered=n_covered,
        extractor="rule" if extract is None else "custom",
        per_answer=tuple(per_answer),
    )
