"""The paper's claims, each put to a test on the grid and given a verdict: reproduced, not reproduced, inconclusive
or not tested. The claims are judged apart from the tables that show them, so that a verdict depends only on the
cells and the verdict rule, never on how the report lays its numbers out; the report prints them in its Claims
section and claims.json carries them as they are. The paper's numbers each claim is quoted with come from
evaluation/report.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mdpo_pipeline.core import stats
from mdpo_pipeline.core.eval.metrics import PAPER_COLUMNS, TABLE_COLUMNS
from mdpo_pipeline.core.methods import BASE
from mdpo_pipeline.evaluation.claims.grid import SIZE_AXIS, STRATEGY_AXIS, Grid, PairKey, number
from mdpo_pipeline.evaluation.claims.quantities import Quantity, better_side, quantity
from mdpo_pipeline.evaluation.report import PAPER_ABLATION_COLUMNS, PAPER_ROWS, PAPER_TABLE2, PAPER_TABLE3

#: The corruption the paper found best (Table 3) and core/corruption.py's default.
BEST_STRATEGY = "crop_1_20"

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED = "reproduced", "not reproduced", "inconclusive", "not tested"
VERDICT_RULE = (
    "A claim is **reproduced** when the Student-t 95 % interval of its paired difference (cells paired by training "
    "seed and axis values; n = the number of pairs) lies entirely on the claimed side of 0, **not reproduced** "
    "when it lies entirely on the other side, and **inconclusive** otherwise, also when fewer than 2 pairs exist. "
    "Claim (i) has an \"≈ 0\" part: DPO's conditional margin minus that of DPO without the image must not be "
    "above 0 (its interval contains 0 or lies below; an interval entirely above 0 refutes it); absence of a "
    "difference is weak evidence with few seeds, so (i) is only as strong as its second part, mDPO − DPO > 0. "
    "A claim whose methods or metrics the grid lacks is **not tested**. Cells of other base models (the replicate "
    "axis `shapeworld.seed`: another world and the base model trained on it) are pooled, each paired within its "
    "own base model, so a verdict holds across base models, not inside one. An inconclusive claim states how many "
    "pairs (seeds × base models) would decide it if its observed mean and spread held (the power line). For "
    "Object HalBench's CHAIR_s and CHAIR_i the numbers also give an interval that counts the benchmark's items too: "
    "a bootstrap that redraws the pairs and, for every cell alike, the items (both with replacement; stats."
    "item_bootstrap); the verdict stays the seeds' t-interval's, and the wider of the two says how far it can be "
    "trusted beyond this item set."
)

_NO_AXIS = "the grid did not vary `{axis}` (add it to params.yaml `experiment.axes`)"


def _verdict(s: stats.Summary, side: int) -> str:
    """The verdict rule (VERDICT_RULE) for a claimed sign ``side`` of a paired difference."""
    if s.n < 2 or s.low is None or s.high is None:
        return INCONCLUSIVE
    low, high = (s.low, s.high) if side > 0 else (-s.high, -s.low)
    return REPRODUCED if low > 0 else NOT_REPRODUCED if high < 0 else INCONCLUSIVE


def judge_claims(grid: Grid) -> list[dict]:
    """The paper's claims in the claims table's order, each with its test, verdict and numbers (table units), at
    the grid's default axis values; a claim whose methods, metrics or axis the grid lacks is not tested."""
    judge = _Judge(grid)
    judge.build_claims()
    return judge.claims


@dataclass
class _Judge:
    """The claims judged so far, each tested at the grid's default axis values unless its test varies an axis."""

    grid: Grid
    claims: list[dict] = field(default_factory=list)

    @property
    def fixed(self) -> dict[str, Any]:
        return self.grid.defaults

    def _missing(self, methods: Sequence[str], keys: Sequence[str], fixed: Mapping[str, Any] | None = None
                 ) -> str | None:
        fixed = self.fixed if fixed is None else fixed
        absent = [m for m in methods if not self.grid.select(m, fixed)]
        if absent:
            return f"method(s) {', '.join(absent)} not in the grid"
        for key in keys:
            lacking = [m for m in methods if not self.grid.has(m, key, fixed)]
            if lacking:
                return f"no {quantity(key).title} for {', '.join(lacking)} (benchmark or probe not run)"
        return None

    def _add(self, cid: str, claim: str, paper: str, test: str, summary: stats.Summary | None, side: int,
             key: str | None, why: str | None = None, verdict: str | None = None, extra: dict | None = None) -> None:
        if why is not None:
            self.claims.append({"id": cid, "claim": claim, "paper": paper, "test": test, "verdict": NOT_TESTED,
                                "why": why, "n": 0, "mean": None, "low": None, "high": None, "numbers": "–"})
            return
        assert summary is not None
        q = quantity(key) if key else Quantity("slope", "slope", decimals=3)
        shown = summary.scaled(q.scale)
        verdict = verdict or _verdict(summary, side)
        numbers = f"Δ {q.show_diff(summary)} (n={summary.n})"
        decides_at = stats.pairs_to_decide(summary) if verdict == INCONCLUSIVE else None
        if extra and "with_items" in extra:
            w = extra["with_items"]
            numbers += f"; with item sampling too [{w['low']:+.{q.decimals}f}, {w['high']:+.{q.decimals}f}]"
        if verdict == INCONCLUSIVE and summary.n >= 2:
            numbers += (f"; ≈ {decides_at} pairs would decide it at this effect and spread" if decides_at else
                        f"; no effect to decide (or more than {stats.MAX_PAIRS} pairs)")
        self.claims.append({
            "id": cid, "claim": claim, "paper": paper, "test": test, "verdict": verdict, "why": None,
            "n": summary.n, "mean": shown.mean, "low": shown.low, "high": shown.high, "decides_at": decides_at,
            "numbers": numbers, **(extra or {}),
        })

    def _pair_claim(self, cid: str, claim: str, paper: str, a: str, b: str, key: str, side: int,
                    require: Sequence[str] = ()) -> None:
        sign = "<" if side < 0 else ">"
        test = f"{a} − {b} on {quantity(key).title} {sign} 0"
        why = self._missing([a, b, *require], [key])
        summary = None if why else self.grid.diff(a, b, key, self.fixed, require=require)
        items = None if why else self.grid.item_diff(a, b, key, self.fixed)
        extra = None
        if items is not None:
            scale = quantity(key).scale
            extra = {"with_items": {"mean": items[0] * scale, "low": items[1] * scale, "high": items[2] * scale}}
        self._add(cid, claim, paper, test, summary, side, key, why, extra=extra)

    def build_claims(self) -> None:
        bunny, llava = PAPER_ROWS["bunny-v1.0-3b"], PAPER_ROWS["llava-1.5-7b"]

        def t1(key: str, a: str, b: str) -> str:
            i = TABLE_COLUMNS.index(key)
            assert i < PAPER_COLUMNS
            return f"Table 1: {a} {bunny[a][i]} → {b} {bunny[b][i]} (Bunny), {llava[a][i]} → {llava[b][i]} (LLaVA)"

        def t2(key: str, m: str) -> str:
            i = PAPER_ABLATION_COLUMNS.index(key)
            return f"Table 2 (Bunny): mdpo {PAPER_TABLE2['mdpo'][i]}, {m} {PAPER_TABLE2[m][i]}"

        # side: the claimed sign of a − b; "a is better" is the metric's better direction (METRICS)
        self._pair_claim("a", "mDPO hallucinates less than DPO (CHAIR_s)", t1("chair_s", "dpo", "mdpo"),
                         "mdpo", "dpo", "chair_s", better_side("chair_s"))
        self._pair_claim("b", "mDPO hallucinates less than DPO (CHAIR_i)", t1("chair_i", "dpo", "mdpo"),
                         "mdpo", "dpo", "chair_i", better_side("chair_i"))
        self._pair_claim("c", "mDPO hallucinates less than DPO (AMBER CHAIR)", t1("amber_chair", "dpo", "mdpo"),
                         "mdpo", "dpo", "amber_chair", better_side("amber_chair"))
        self._pair_claim("d", "mDPO's gain over DPO holds at matched recall (CHAIR_i at the common recall)",
                         "not in the paper (a length effect could pass for grounding)",
                         "mdpo", "dpo", "matched.chair_i", better_side("matched.chair_i"))
        self._pair_claim("e1", "Coverage tends to drop with mDPO (Object HalBench recall vs base)",
                         "review's summary; the paper reports no Object HalBench recall",
                         "mdpo", BASE, "recall", -better_side("recall"))
        self._pair_claim("e2", "Coverage tends to drop with mDPO (AMBER Cover vs base)",
                         t1("amber_cover", "base", "mdpo"), "mdpo", BASE, "amber_cover", -better_side("amber_cover"))
        self._pair_claim("f", "The conditional term matters (removing it raises CHAIR_s)",
                         t2("chair_s", "mdpo_no_conditional"), "mdpo_no_conditional", "mdpo", "chair_s",
                         -better_side("chair_s"))
        self._pair_claim("g", "The anchor term matters (removing it raises CHAIR_s)",
                         t2("chair_s", "mdpo_no_anchor"), "mdpo_no_anchor", "mdpo", "chair_s",
                         -better_side("chair_s"))
        i = PAPER_ABLATION_COLUMNS.index("chair_s")
        self._pair_claim(
            "h", "The conditional term matters more than the anchor: (no_conditional − mdpo) − (no_anchor − mdpo) "
            "on CHAIR_s, i.e. no_conditional − no_anchor, paired where mdpo exists",
            f"Table 2 (Bunny): w/o conditional {PAPER_TABLE2['mdpo_no_conditional'][i]} vs w/o anchor "
            f"{PAPER_TABLE2['mdpo_no_anchor'][i]}",
            "mdpo_no_conditional", "mdpo_no_anchor", "chair_s", -better_side("chair_s"), require=("mdpo",))
        self._claim_ignores_image()
        self._claim_strategy()
        self._claim_data_size()

    def _claim_ignores_image(self) -> None:
        key = "probe.conditional_margin"
        claim = ("DPO ignores the image: DPO's conditional margin is not above that of DPO without the image, while "
                 "mDPO − DPO > 0")
        paper = "the paper's motivation (Sec. 3); not a table"
        test = "dpo − dpo_no_image ≤ 0 (interval not above 0) and mdpo − dpo > 0 on conditional_margin"
        why = self._missing(["dpo", "dpo_no_image", "mdpo"], [key])
        if why:
            self._add("i", claim, paper, test, None, 1, key, why)
            return
        ignore = self.grid.diff("dpo", "dpo_no_image", key, self.fixed)
        gain = self.grid.diff("mdpo", "dpo", key, self.fixed)
        second = _verdict(gain, 1)
        first_refuted = ignore.low is not None and ignore.low > 0
        if ignore.n < 2 or gain.n < 2:
            verdict = INCONCLUSIVE
        elif first_refuted or second == NOT_REPRODUCED:
            verdict = NOT_REPRODUCED
        else:
            verdict = second
        q = quantity(key)
        self._add("i", claim, paper, test, gain, 1, key, verdict=verdict, extra={
            "numbers": f"dpo − dpo_no_image Δ {q.show_diff(ignore)} (n={ignore.n}); mdpo − dpo Δ {q.show_diff(gain)} "
                       f"(n={gain.n})",
            "parts": {"dpo_minus_dpo_no_image": ignore.as_dict(), "mdpo_minus_dpo": gain.as_dict()}})

    def _claim_strategy(self) -> None:
        key = "chair_s"
        claim = f"{BEST_STRATEGY} beats the other corruption strategies (mDPO CHAIR_s)"
        i = PAPER_ABLATION_COLUMNS.index(key)
        paper = "Table 3 (Bunny): " + ", ".join(f"{s} {v[i]}" for s, v in PAPER_TABLE3.items())
        test = f"mdpo(other) − mdpo({BEST_STRATEGY}) > 0 for every other strategy"
        if STRATEGY_AXIS not in self.grid.axes:
            self._add("j1", claim, paper, test, None, 1, key, _NO_AXIS.format(axis=STRATEGY_AXIS))
            return
        values = self.grid.axes[STRATEGY_AXIS]
        others = [v for v in values if v != BEST_STRATEGY]
        if BEST_STRATEGY not in values or not others:
            self._add("j1", claim, paper, test, None, 1, key, f"the grid's strategies {values} lack {BEST_STRATEGY} "
                      "or any other")
            return
        best = self.grid.values("mdpo", key, self.fixed | {STRATEGY_AXIS: BEST_STRATEGY}, drop=STRATEGY_AXIS)
        side = -better_side(key)
        parts = {}
        for other in others:
            vo = self.grid.values("mdpo", key, self.fixed | {STRATEGY_AXIS: other}, drop=STRATEGY_AXIS)
            parts[other] = stats.paired_difference(vo, best)
        verdicts = [_verdict(s, side) for s in parts.values()]
        verdict = (NOT_REPRODUCED if NOT_REPRODUCED in verdicts else
                   REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE)
        q = quantity(key)
        worst = min(parts.values(), key=lambda s: -math.inf if s.mean is None else side * s.mean)
        self._add("j1", claim, paper, test, worst, side, key, verdict=verdict, extra={
            "numbers": "; ".join(f"{o} − {BEST_STRATEGY} Δ {q.show_diff(s)} (n={s.n})" for o, s in parts.items()),
            "parts": {o: s.as_dict() for o, s in parts.items()}})

    def _claim_data_size(self) -> None:
        claim = "More preference data → a larger mDPO gain over DPO (CHAIR_s)"
        paper = "the review's summary: gains grow with more preference data"
        test = "per seed, least-squares slope of (DPO − mDPO CHAIR_s) on log10 n; mean slope > 0"
        if SIZE_AXIS not in self.grid.axes:
            self._add("j2", claim, paper, test, None, 1, None, _NO_AXIS.format(axis=SIZE_AXIS))
            return
        key = "chair_s"
        sizes = [n for n in self.grid.axes[SIZE_AXIS] if number(n) is not None and n > 0]
        why = self._missing(["mdpo", "dpo"], [key], {a: v for a, v in self.fixed.items() if a != SIZE_AXIS})
        if len(sizes) < 2:
            why = f"{SIZE_AXIS} needs two or more positive sizes, got {self.grid.axes[SIZE_AXIS]}"
        if why:
            self._add("j2", claim, paper, test, None, 1, None, why)
            return
        side = better_side(key)
        gains: dict[PairKey, list[tuple[float, float]]] = {}
        for n in sizes:
            fixed = self.fixed | {SIZE_AXIS: n}
            diffs = stats.paired_values(self.grid.values("dpo", key, fixed, drop=SIZE_AXIS),
                                        self.grid.values("mdpo", key, fixed, drop=SIZE_AXIS))
            for pk, d in diffs.items():
                gains.setdefault(pk, []).append((math.log10(n), -side * d))
        slopes = [stats.slope([x for x, _ in pts], [y for _, y in pts]) for pts in gains.values()]
        summary = stats.summarize(slopes)
        # the slope is in CHAIR_s fractions per decade of n: shown ×100 like the metric
        q = Quantity("slope", "slope", quantity(key).scale, 2)
        self.claims.append({
            "id": "j2", "claim": claim, "paper": paper, "test": test, "verdict": _verdict(summary, 1), "why": None,
            "n": summary.n, **{k: v for k, v in summary.scaled(q.scale).as_dict().items() if k in ("mean", "low",
                                                                                                  "high")},
            "numbers": f"slope {q.show_diff(summary)} CHAIR_s points per ×10 pairs (n={summary.n} seeds)"})
