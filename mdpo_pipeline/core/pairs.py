"""Preference pairs from rated VLFeedback instructions: Silkie's rule, source filter, seeded sample, TRL records.

Every random choice is seeded per instruction (or per pair) through ``stable_seed``, so the result does not
depend on row order, process or PYTHONHASHSEED.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.errors import shown
from mdpo_pipeline.core.io import atomic_dir, stable_seed, write_json, write_jsonl, write_parquet
from mdpo_pipeline.core.schemas import PAIRS_SCHEMA, Instruction, PreferencePair, pair_to_row, same_answer

log = logging.getLogger(__name__)

STRATEGIES = ("all_pairs", "one_per_instruction")
#: Why a candidate pair is not built, in the order the checks run; each is a count in the summary, and the pairs
#: built plus these are the candidates (``pair_candidates``).
SKIP_REASONS = ("ties_skipped", "below_margin_skipped", "identical_skipped", "equal_after_normalisation_skipped")


@dataclass(frozen=True)
class PairsConfig:
    """How pairs are built and sampled (params.yaml: preference_pairs)."""

    strategy: str = "all_pairs"  # "all_pairs" (Silkie's rule) or "one_per_instruction" (best vs a lower one)
    sources: tuple[str, ...] = ("llava",)  # instruction sources to keep, lowercase; empty keeps every source
    n: int = 10_000  # pairs to sample (the paper: 10K LLaVA-sourced pairs)
    seed: int = 0  # seeds every random choice: tie breaks, the rejected pick, the sample
    min_margin: float = 0.0  # keep a rated pair only if chosen score - rejected score >= this

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {shown(self.strategy)}")
        # A bare string would silently iterate as characters.
        ok = isinstance(self.sources, tuple | list) and all(isinstance(s, str) and s.strip() for s in self.sources)
        if not ok:
            raise ValueError(f"sources must be a list of non-empty source ids, got {shown(self.sources)}")
        object.__setattr__(self, "sources", tuple(s.strip().lower() for s in self.sources))
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be a positive integer, got {shown(self.n)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {shown(self.seed)}")
        margin = self.min_margin
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < math.inf:
            raise ValueError(f"min_margin must be a number >= 0, got {shown(self.min_margin)}")


@dataclass
class PairsResult:
    """The sampled pairs and the counts that explain how they were reached."""

    pairs: list[PreferencePair]
    summary: dict[str, Any] = field(default_factory=dict)


def filter_sources(instructions: Iterable[Instruction], sources: Sequence[str]) -> list[Instruction]:
    """Instructions whose source (case-insensitive) is in ``sources``; all of them when ``sources`` is empty."""
    wanted = {s.lower() for s in sources}
    return [ins for ins in instructions if not wanted or ins.source.lower() in wanted]


def _pair(ins: Instruction, ci: int, ri: int) -> PreferencePair:
    c, r = ins.completions[ci], ins.completions[ri]
    return PreferencePair(
        pair_id=f"{ins.id}:{ci}-{ri}",  # completion indices make the id unique and traceable
        instruction_id=ins.id,
        source=ins.source,
        prompt=ins.prompt,
        image=ins.image,
        chosen=c.response,
        rejected=r.response,
        chosen_model=c.model,
        rejected_model=r.model,
        chosen_score=c.score,
        rejected_score=r.score,
    )


def _text_skip_reason(chosen: str, rejected: str) -> str | None:
    # Same text on both sides gives DPO a zero gradient, and the quality gate rejects it. Answers that differ only in
    # spacing or Unicode composition are the same answer: chat templates trim and tokenizers normalise, so they
    # often become the same ids (the same zero gradient), and where not, the pair would teach spacing.
    if chosen == rejected:
        return "identical_skipped"
    if same_answer(chosen, rejected):
        return "equal_after_normalisation_skipped"
    return None


def _skip_reason(ins: Instruction, ci: int, ri: int, cfg: PairsConfig) -> str | None:
    """Why a strictly ordered rated pair is dropped, or None to keep it."""
    if ins.completions[ci].score - ins.completions[ri].score < cfg.min_margin:  # type: ignore[operator]
        return "below_margin_skipped"
    return _text_skip_reason(ins.completions[ci].response, ins.completions[ri].response)


def _pairs_of(ins: Instruction, cfg: PairsConfig, counts: Counter) -> list[PreferencePair]:
    if ins.preferred is not None:
        counts["pair_candidates"] += 1
        ci, ri = ins.preferred
        if reason := _text_skip_reason(ins.completions[ci].response, ins.completions[ri].response):
            counts[reason] += 1
            return []
        counts["preferred_pairs"] += 1
        return [_pair(ins, ci, ri)]
    usable = [i for i, c in enumerate(ins.completions) if c.usable]
    counts["unusable_completions"] += len(ins.completions) - len(usable)
    if len(usable) < 2:
        counts["too_few_usable"] += 1
        return []
    # Rounded so that means of the same ratings summed in another order still tie.
    score = {i: round(ins.completions[i].score, 9) for i in usable}  # type: ignore[arg-type]
    if cfg.strategy == "all_pairs":
        out = []
        for k, a in enumerate(usable):
            for b in usable[k + 1 :]:
                counts["pair_candidates"] += 1
                if score[a] == score[b]:
                    counts["ties_skipped"] += 1
                    continue
                ci, ri = (a, b) if score[a] > score[b] else (b, a)
                if reason := _skip_reason(ins, ci, ri, cfg):
                    counts[reason] += 1
                else:
                    out.append(_pair(ins, ci, ri))
        return out
    counts["pair_candidates"] += 1  # this strategy's one candidate: the instruction's pair
    rng = random.Random(stable_seed(cfg.seed, cfg.strategy, ins.id))
    best_score = max(score.values())
    ci = rng.choice([i for i in usable if score[i] == best_score])
    lower = [i for i in usable if score[i] < best_score]
    if not lower:
        counts["ties_skipped"] += 1  # every usable completion tied: no preference to learn
        return []
    # Draw only among the lower answers that would be kept, so one bad draw does not lose the instruction.
    reasons = {i: _skip_reason(ins, ci, i, cfg) for i in lower}
    ok = [i for i in lower if reasons[i] is None]
    if not ok:
        # One candidate per instruction: counted once, under the first reason (in SKIP_REASONS' order) that applies.
        counts[next(r for r in SKIP_REASONS if r in reasons.values())] += 1
        return []
    return [_pair(ins, ci, rng.choice(ok))]


def build_pairs(
    instructions: Iterable[Instruction], cfg: PairsConfig, counts: Counter | None = None
) -> list[PreferencePair]:
    """All pairs of ``instructions`` under ``cfg.strategy``, sorted by pair_id; skip reasons go into ``counts``."""
    counts = Counter() if counts is None else counts
    out = [p for ins in instructions for p in _pairs_of(ins, cfg, counts)]
    return sorted(out, key=lambda p: p.pair_id)


def sample_pairs(pairs: Sequence[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    """A seeded sample of ``n`` pairs (all when fewer), sorted by pair_id.

    Each pair's rank is a hash of (seed, pair_id), so the sample ignores input order and a smaller n
    gives a subset of a larger one.
    """
    if len(pairs) < n:
        log.warning("only %d pairs available, fewer than the %d requested: keeping all", len(pairs), n)
    ranked = sorted(pairs, key=lambda p: (stable_seed(seed, "sample", p.pair_id), p.pair_id))
    return sorted(ranked[:n], key=lambda p: p.pair_id)


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def pair_stats(pairs: Sequence[PreferencePair]) -> dict[str, Any]:
    """Margin and answer-length statistics: a rejected answer that is usually longer is a text-only cue."""
    margins = [
        p.chosen_score - p.rejected_score for p in pairs if p.chosen_score is not None and p.rejected_score is not None
    ]
    return {
        "n_pairs": len(pairs),
        "mean_margin": _mean(margins),
        "chosen_mean_chars": _mean([len(p.chosen) for p in pairs]),
        "rejected_mean_chars": _mean([len(p.rejected) for p in pairs]),
        "rejected_longer_share": _mean([float(len(p.rejected) > len(p.chosen)) for p in pairs]),
    }


def make_pairs(instructions: Sequence[Instruction], cfg: PairsConfig) -> PairsResult:
    """Filter by source, build pairs, sample ``cfg.n`` of them, and summarize every step."""
    kept = filter_sources(instructions, cfg.sources)
    counts: Counter = Counter()
    built = build_pairs(kept, cfg, counts)
    skipped = sum(counts[r] for r in SKIP_REASONS)
    if len(built) + skipped != counts["pair_candidates"]:
        raise AssertionError(
            f"pairing lost candidates: {len(built)} built + {skipped} skipped != {counts['pair_candidates']} candidates"
        )
    sampled = sample_pairs(built, cfg.n, cfg.seed)
    per_source: dict[str, dict[str, int]] = {}
    for key, items in (("instructions", instructions), ("pairs_built", built), ("pairs_sampled", sampled)):
        for src, k in sorted(Counter(x.source.lower() for x in items).items()):
            per_source.setdefault(src, {"instructions": 0, "pairs_built": 0, "pairs_sampled": 0})[key] = k
    summary = {
        "config": asdict(cfg),
        "instructions_in": len(instructions),
        "instructions_after_source_filter": len(kept),
        "instructions_with_pairs": len({p.instruction_id for p in built}),
        "pairs_built": len(built),
        "pairs_sampled": len(sampled),
        "n_requested": cfg.n,
        "sample_short": len(built) < cfg.n,
        "preferred_pairs": counts["preferred_pairs"],
        # Candidates: completion pairs under all_pairs, instructions with two usable answers under
        # one_per_instruction, fixed pairs; each is built or skipped for one of SKIP_REASONS.
        "pair_candidates": counts["pair_candidates"],
        # ties_skipped: tied completion pairs under all_pairs; instructions whose usable answers all tie otherwise.
        **{reason: counts[reason] for reason in SKIP_REASONS},
        "too_few_usable": counts["too_few_usable"],
        "unusable_completions": counts["unusable_completions"],
        "per_source": per_source,
        "built": pair_stats(built),
        "sampled": pair_stats(sampled),
    }
    return PairsResult(pairs=sampled, summary=summary)


def to_trl_record(pair: PreferencePair) -> dict[str, Any]:
    """One TRL vision-preference example: conversational prompt/chosen/rejected plus the image's relative path.

    The image placeholder stays a bare ``{"type": "image"}``: TRL fills it with the loaded image and the
    model's own processor applies its chat template, so no "USER: <image>" template is baked in here.
    """
    return {
        "pair_id": pair.pair_id,
        "image": pair.image,
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": pair.prompt}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": pair.chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": pair.rejected}]}],
    }


def write_pairs(result: PairsResult, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Replace ``out_dir`` atomically with pairs.parquet, pairs_trl.jsonl and summary.json; return the summary."""
    summary = dict(result.summary) | {"files": ["pairs.parquet", "pairs_trl.jsonl", "summary.json"]}
    with atomic_dir(Path(out_dir)) as tmp:
        write_parquet([pair_to_row(p) for p in result.pairs], tmp / "pairs.parquet", PAIRS_SCHEMA)
        write_jsonl((to_trl_record(p) for p in result.pairs), tmp / "pairs_trl.jsonl")
        write_json(summary, tmp / "summary.json")
    return summary
