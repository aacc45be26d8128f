"""The mDPO loss family (docs/method.md, "Objective"; paper Tables 2 and 4) as pure torch functions over
per-sample summed answer log-probs.

r(y|m) = log π(y|m,q) − log π_ref(y|m,q), each log-prob summed over answer tokens, shape (B,).

- dpo:              −log σ(β·[r(y_w|m) − r(y_l|m)])
- conditional:      −log σ(β·[r(y_w|m) − r(y_w|m_l)])      (m_l = corrupted image)
- anchor:           −log σ(β·r(y_w|m) − δ)
- anchor_rejected:  −log σ(δ − β·r(y_l|m))
- anchor_corrupted: −log σ(δ − β·r(y_w|m_l))

The two extra anchors (paper Table 4) are described only in words in the paper: the forms above are our
reading of its description (anchor y_l and (y_w, m_l) so that their rewards are pushed below δ).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mdpo_pipeline.core.methods import METHODS, TERMS, LossWeights

#: β of the paper, which is also TRL's DPOConfig default: the value MDPOConfig trains with unless set (a test keeps
#: the two equal); the pure functions below default to it so that their worked examples read as the paper's.
BETA = 0.1
#: The three views whose summed log-probs a pair has: chosen | image, rejected | image, chosen | corrupted image.
VIEWS = ("chosen", "rejected", "chosen_corrupted")


def implicit_rewards(policy: Mapping[str, Any], reference: Mapping[str, Any], beta: float) -> dict[str, Any]:
    """β·(log π − log π_ref) of each view present in ``policy`` (tensors or numbers): the rewards every term compares."""
    return {view: beta * (policy[view] - reference[view]) for view in VIEWS if view in policy}


@dataclass
class LossOutput:
    """Weighted scalar loss, unweighted per-term batch means and detached per-sample rewards."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    rewards: dict[str, torch.Tensor]

    def metrics(self) -> dict[str, float]:
        """Flat floats for logging, named like TRL's DPOTrainer metrics."""
        r = self.rewards
        out = {
            "rewards/chosen": r["chosen"].mean().item(),
            "rewards/rejected": r["rejected"].mean().item(),
            "rewards/margins": r["margin"].mean().item(),
            "rewards/accuracies": (r["margin"] > 0).float().mean().item(),
        }
        if "chosen_corrupted" in r:
            out["rewards/chosen_corrupted"] = r["chosen_corrupted"].mean().item()
            out["rewards/conditional_margins"] = r["conditional_margin"].mean().item()
            out["rewards/conditional_accuracies"] = (r["conditional_margin"] > 0).float().mean().item()
        out.update({f"loss/{name}": value.item() for name, value in self.terms.items()})
        return out


def _check(named: dict[str, torch.Tensor]) -> None:
    """Raise unless every input is a non-empty 1-D floating tensor of one shared shape."""
    shape = None
    for name, t in named.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1 or t.numel() == 0:
            raise ValueError(f"{name} must have shape (B,) with B >= 1, got {tuple(t.shape)}")
        if shape is None:
            shape = t.shape
        elif t.shape != shape:
            raise ValueError(f"shape mismatch: {name} has {tuple(t.shape)}, expected {tuple(shape)}")


def mdpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    policy_chosen_corrupted: torch.Tensor | None = None,
    reference_chosen_corrupted: torch.Tensor | None = None,
    *,
    beta: float = BETA,
    delta: float = 0.0,
    weights: LossWeights = METHODS["mdpo"],
) -> LossOutput:
    """Weighted sum of the mDPO terms (module docstring), each averaged over the batch."""
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")
    if not (isinstance(delta, (int, float)) and math.isfinite(delta)):
        raise ValueError(f"delta must be finite, got {delta!r}")
    if not isinstance(weights, LossWeights):
        raise TypeError(f"weights must be a LossWeights, got {type(weights).__name__}")
    if weights.beyond_mdpo:
        raise ValueError(f"weights with pair_loss={weights.pair_loss!r}, quality={weights.quality}, sft={weights.sft} "
                         "go beyond the mDPO terms: core.objectives.method_loss computes them")
    inputs = {
        "policy_chosen": policy_chosen,
        "policy_rejected": policy_rejected,
        "reference_chosen": reference_chosen,
        "reference_rejected": reference_rejected,
    }
    if (policy_chosen_corrupted is None) != (reference_chosen_corrupted is None):
        raise ValueError("pass both policy_chosen_corrupted and reference_chosen_corrupted, or neither")
    has_corrupted = policy_chosen_corrupted is not None
    if weights.needs_corrupted and not has_corrupted:
        needing = [f"{n}={getattr(weights, n)}" for n in ("conditional", "anchor_corrupted") if getattr(weights, n) > 0]
        raise ValueError(f"weights {', '.join(needing)} need policy_chosen_corrupted and reference_chosen_corrupted")
    if has_corrupted:
        inputs["policy_chosen_corrupted"] = policy_chosen_corrupted
        inputs["reference_chosen_corrupted"] = reference_chosen_corrupted
    _check(inputs)

    # Rewards are small differences of large sums: never round them again in bf16/fp16.
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in inputs.values()), torch.float32)
    # The reference model is a constant target: no gradient may reach it even if a caller forgot no_grad.
    logr = {k: (v.detach() if k.startswith("reference") else v).to(dtype) for k, v in inputs.items()}
    r = implicit_rewards({k.removeprefix("policy_"): v for k, v in logr.items() if k.startswith("policy_")},
                         {k.removeprefix("reference_"): v for k, v in logr.items() if k.startswith("reference_")}, beta)
    chosen, rejected, corrupted = r["chosen"], r["rejected"], r.get("chosen_corrupted")

    # logsigmoid stays finite at |x| ~ 1e3 where log(sigmoid(x)) gives -inf and NaN gradients.
    logits = {"dpo": chosen - rejected, "anchor": chosen - delta, "anchor_rejected": delta - rejected}
    if corrupted is not None:
        logits["conditional"] = chosen - corrupted
        logits["anchor_corrupted"] = delta - corrupted
    terms = {name: -F.logsigmoid(logits[name]).mean() for name in TERMS if name == "dpo" or getattr(weights, name) > 0}
    # Weight-0 "dpo" is reported but left out of the sum, so a -inf log-prob there cannot make 0 * inf = NaN.
    loss = sum(getattr(weights, n) * v for n, v in terms.items() if getattr(weights, n) > 0)

    rewards = {"chosen": chosen.detach(), "rejected": rejected.detach(), "margin": (chosen - rejected).detach()}
    if corrupted is not None:
        rewards["chosen_corrupted"] = corrupted.detach()
        rewards["conditional_margin"] = (chosen - corrupted).detach()
    return LossOutput(loss=loss, terms=terms, rewards=rewards)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float = BETA,
) -> LossOutput:
    """Plain DPO: ``mdpo_loss`` with ``METHODS["dpo"]``."""
    return mdpo_loss(
        policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=beta, weights=METHODS["dpo"]
    )


def image_use_probe(policy: Mapping[str, tuple[float, float, float]],
                    reference: Mapping[str, tuple[float, float, float]], beta: float) -> dict[str, Any]:
    """The paper's mechanism, measured: does a model's preference for the chosen answer depend on the image?

    Per held-out pair, the summed log-probs of its VIEWS under the model (``policy``) and the base (``reference``):
    ``conditional_margin`` = r(y_w|m) − r(y_w|m_l), the conditional term's margin, ``reward_margin`` = r(y_w|m) −
    r(y_l|m), the DPO term's (both from ``implicit_rewards``, as in the loss), ``image_gap`` = log π(y_w|m) −
    log π(y_w|m_l) of the model and ``image_gap_base`` of the base; means over pairs, and the share of pairs with a
    positive conditional margin."""
    ids = sorted(policy)
    if not ids or set(ids) != set(reference):
        raise ValueError("the probe's policy and reference log-probs must cover the same pairs")
    views = lambda logps: {v: torch.tensor([logps[i][k] for i in ids], dtype=torch.float64)  # noqa: E731
                           for k, v in enumerate(VIEWS)}
    pol, ref = views(policy), views(reference)
    r = implicit_rewards(pol, ref, beta)
    conditional = r["chosen"] - r["chosen_corrupted"]
    return {
        "n": len(ids),
        "conditional_margin": conditional.mean().item(),
        "conditional_accuracy": (conditional > 0).double().mean().item(),
        "reward_margin": (r["chosen"] - r["rejected"]).mean().item(),
        "image_gap": (pol["chosen"] - pol["chosen_corrupted"]).mean().item(),
        "image_gap_base": (ref["chosen"] - ref["chosen_corrupted"]).mean().item(),
        "beta": beta,
    }
