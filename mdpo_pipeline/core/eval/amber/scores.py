"""Both AMBER tasks at once: a mixed response set split by annotation type and scored in one mode."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mdpo_pipeline.core.eval.common import check_mode
from mdpo_pipeline.core.eval.amber.data import AmberData, _responses
from mdpo_pipeline.core.eval.amber.discriminative import AmberDiscriminativeResult, amber_discriminative
from mdpo_pipeline.core.eval.amber.generative import AmberGenerativeResult, amber_generative

#: inference.py's printed section labels (its spelling) and the ``official`` keys they show
_PRINTED_SECTIONS = (("Descriminative Task", "overall"), ("Exsitence", "existence"), ("Attribute", "attribute"),
                     ("State", "state"), ("Number", "number"), ("Action", "action"), ("Relation", "relation"))


@dataclass(frozen=True)
class AmberResult:
    """Both AMBER tasks; a task with no responses is None."""

    generative: AmberGenerativeResult | None
    discriminative: AmberDiscriminativeResult | None
    mode: str = "offline"

    def official_stdout(self) -> str:
        """What inference.py prints for these answers (official mode), labels and spacing included."""
        if self.mode != "official":
            raise ValueError("official_stdout needs a result of mode='official'")
        out = ""
        if self.generative is not None:
            o = self.generative.official
            out += f"Generative Task:\nCHAIR:\t\t {o['CHAIR']}\nCover:\t\t {o['Cover']}\nHal:\t\t {o['Hal']}\n"
            out += f"Cog:\t\t {o['Cog']} \n\n"
        if self.discriminative is not None:
            for label, key in _PRINTED_SECTIONS:
                v = self.discriminative.official[key]
                out += f"{label}:\nAccuracy:\t {v['Accuracy']}\nPrecision:\t {v['Precision']}\n"
                out += f"Recall:\t\t {v['Recall']}\nF1:\t\t {v['F1']}" + ("\n" if key == "relation" else " \n\n")
        return out

    def as_dict(self, detail: bool = False) -> dict:
        """Flat metrics, generative ones prefixed "generative_", yes/no ones "discriminative_"."""
        out: dict = {"mode": self.mode}
        for name in ("generative", "discriminative"):
            part = getattr(self, name)
            if part is not None:
                out |= {f"{name}_{k}": v for k, v in part.as_dict(detail).items()}
        return out


def amber_scores(
    responses: Mapping[int, str] | Iterable[Mapping], data: AmberData, *, mode: str = "offline",
    **generative_options,
) -> AmberResult:
    """Score a mixed response set in ``mode`` ("offline" or "official"): generative ids as ``amber_generative``,
    yes/no ids as ``amber_discriminative``."""
    check_mode(mode, "AMBER")
    answers = _responses(responses)
    for item_id in answers:
        data.annotation(item_id)
    gen = {i: t for i, t in answers.items() if data.annotation(i)["type"] == "generative"}
    dis = {i: t for i, t in answers.items() if i not in gen}
    return AmberResult(
        amber_generative(gen, data, mode=mode, **generative_options) if gen else None,
        amber_discriminative(dis, data, mode=mode) if dis else None,
        mode,
    )
