"""mDPO's successors and TRL's base preference losses as pure torch functions, beside core/losses.py.

Inputs are per-sample answer log-probs of shape (B,), summed over answer tokens unless a docstring says otherwise;
``reference_*`` inputs are detached (a constant target), everything is computed in at least float32, and the
``*_loss`` functions return the per-sample loss (B,), to be averaged by the caller (``mpo_loss`` returns a
``LossOutput`` like ``mdpo_loss``). With r = log π − log π_ref and x = r(y_w) − r(y_l):

- PAIR_LOSSES (named like TRL's DPOConfig.loss_type, one signature: the four log-prob tensors, beta=, options):
  sigmoid  −log σ(βx)  (label_smoothing ε > 0: cDPO)      ipo      (x − 1/(2β))²
  hinge    relu(1 − βx)                                   robust   rDPO, label smoothing ε
  apo_zero 1 − σ(βr_w) + σ(βr_l)                          apo_down σ(βr_w) + 1 − σ(βx)
  bco_pair −log σ(βr_w − δ) − log σ(−(βr_l − δ))          (MPO's quality term; δ from RunningMean)
- simpo_loss (reference-free, needs token counts, so not in PAIR_LOSSES; TRL has it as CPOTrainer's "simpo").
- MPO: sft_loss, mpo_loss (preference + quality + generation, weights MPO_WEIGHTS), RunningMean for δ.
- CHiP: chip_visual_loss, chip_token_loss (+ sequential_kl), segment_weighted_logps.
- SymMPO: symmpo_symmetric_loss, symmpo_margin_consistency.

Where a paper's equation text was not available to check, a docstring says the form was read from the authors'
released code or from prose, and names which.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F

from mdpo_pipeline.core.losses import BETA, LossOutput, _check, implicit_rewards, mdpo_loss
from mdpo_pipeline.core.methods import METHODS, TERMS, LossWeights

#: MPO's weights w_p, w_q, w_g (preference, quality, generation): the "mpo" method's (core/methods.py says where
#: they come from).
MPO_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"preference": METHODS["mpo"].dpo, "quality": METHODS["mpo"].quality, "generation": METHODS["mpo"].sft})


# ---------------------------------------------------------------- validation


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")


def _finite(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _prepare(named: dict[str, torch.Tensor], beta: float | None = None) -> dict[str, torch.Tensor]:
    """``_check`` the inputs, validate β, promote to ≥ float32 and detach every ``reference_*`` input."""
    if beta is not None:
        _check_beta(beta)
    _check(named)
    # Rewards are small differences of large sums: never round them again in bf16/fp16.
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in named.values()), torch.float32)
    return {k: (v.detach() if k.startswith("reference") else v).to(dtype) for k, v in named.items()}


def _counts(name: str, counts: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Answer token counts (B,), any numeric dtype, all > 0, as ``like``'s dtype."""
    if not isinstance(counts, torch.Tensor) or counts.shape != like.shape:
        raise ValueError(f"{name} must be a tensor of shape {tuple(like.shape)}, "
                         f"got {tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__}")
    counts = counts.detach().to(like.dtype)
    if not (torch.isfinite(counts).all() and (counts > 0).all()):
        raise ValueError(f"{name} must be finite and > 0 (answer token counts)")
    return counts


def _logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta):
    """Unscaled log-ratios r_w, r_l (``implicit_rewards`` at β = 1), after ``_prepare``."""
    x = _prepare({"policy_chosen": policy_chosen, "policy_rejected": policy_rejected,
                  "reference_chosen": reference_chosen, "reference_rejected": reference_rejected}, beta)
    r = implicit_rewards({"chosen": x["policy_chosen"], "rejected": x["policy_rejected"]},
                         {"chosen": x["reference_chosen"], "rejected": x["reference_rejected"]}, 1.0)
    return r["chosen"], r["rejected"]


# ---------------------------------------------------------------- base pair losses (TRL loss_type)


def sigmoid_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, *,
                 beta: float = BETA, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO, Rafailov et al. 2023 (arXiv 2305.18290) Eq. 7: −log σ(β·x), x = r_w − r_l.

    label_smoothing ε ∈ [0, 0.5] gives conservative DPO (cDPO, Mitchell 2023, "A note on DPO with noisy
    preferences"): (1 − ε)·(−log σ(βx)) + ε·(−log σ(−βx)), the labels flipped with probability ε. This is TRL's
    ``loss_type="sigmoid"`` with ``label_smoothing``; TRL's "robust" is the different rDPO form (``robust_loss``)."""
    eps = _finite("label_smoothing", label_smoothing)
    if not 0.0 <= eps <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing!r}")
    rw, rl = _logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    z = beta * (rw - rl)
    loss = -F.logsigmoid(z)
    return loss if eps == 0.0 else (1 - eps) * loss - eps * F.logsigmoid(-z)


def robust_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, *,
                beta: float = BETA, label_smoothing: float = 0.0) -> torch.Tensor:
    """Robust DPO (rDPO), Chowdhury et al. 2024 (arXiv 2403.00409), TRL's ``loss_type="robust"``:
    [(1 − ε)·(−log σ(βx)) − ε·(−log σ(−βx))] / (1 − 2ε), ε ∈ [0, 0.5) the assumed label-flip rate.

    An unbiased estimate of the clean-label DPO loss (it can go negative), unlike cDPO (``sigmoid_loss`` with
    label_smoothing), which mixes in the flipped loss with a plus sign. ε defaults to 0, as TRL's label_smoothing,
    which makes it plain DPO: set the flip rate you assume."""
    eps = _finite("label_smoothing", label_smoothing)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5) for robust, got {label_smoothing!r}")
    rw, rl = _logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    z = beta * (rw - rl)
    return ((1 - eps) * -F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


def ipo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, *,
             beta: float = BETA) -> torch.Tensor:
    """IPO, Azar et al. 2024 (arXiv 2310.12036) Eq. 17 (as TRL's comment cites it): (x − 1/(2β))², β the paper's τ,
    on the log-ratio difference x itself (not β·x), as TRL's ``loss_type="ipo"``.

    TRL feeds IPO per-token-mean log-probs (each summed log-prob divided by its answer's token count); pass those
    to match TRL, summed ones for the paper's sequence-level form."""
    rw, rl = _logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    return (rw - rl - 1 / (2 * beta)) ** 2


def hinge_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, *,
               beta: float = BETA) -> torch.Tensor:
    """SLiC's calibration hinge (Zhao et al. 2023, arXiv 2305.10425) on reference-normalised log-ratios, the
    "hinge-norm" of RSO (Liu et al. 2024, arXiv 2309.06657), TRL's ``loss_type="hinge"``: relu(1 − β·x), so 1/β
    is the margin. (SLiC's own form has no reference model; the normalisation is RSO's/TRL's.)"""
    rw, rl = _logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    return torch.relu(1 - beta * (rw - rl))


def apo_zero_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, *,
                  beta: float = BETA) -> torch.Tensor:
    """APO-zero, D'Oosterlinck et al. 2024 (arXiv 2408.06266) Eq. 7: (1 − σ(β·r_w)) + σ(β·r_l) — raise the
    chosen likelihood, lower the rejected (chosen answers better than the model's own). Bounded, so σ is safe."""
    rw, rl = _logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    return 1 - torch.sigmoid(beta * rw) + torch.sigmoid(beta * rl)


def apo_down_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, *,
                  beta: float = BETA) -> torch.Tensor:
    """APO-down, D'Oosterlinck et al. 2024 (arXiv 2408.06266) Eq. 8: σ(β·r_w) + (1 − σ(β·(r_w − r_l))) — lower
    both likelihoods, the rejected more (chosen answers worse than the model's own)."""
    rw, rl = _logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    return torch.sigmoid(beta * rw) + 1 - torch.sigmoid(beta * (rw - rl))


def bco_pair_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, *,
                  beta: float = BETA, delta: float | torch.Tensor = 0.0) -> torch.Tensor:
    """BCO (Jung et al. 2024, arXiv 2404.04656) as MPO's quality loss L_q = L_q⁺ + L_q⁻ (arXiv 2411.10442, §3
    "Mixed Preference Optimization", the formulas of the authors' InternVL2.5-MPO card), TRL's ``"bco_pair"``:
    −log σ(β·r_w − δ) − log σ(−(β·r_l − δ)), each answer judged against the reward shift δ on its own.

    δ: a float, or a detached 0-d or (B,) tensor — the running mean of past rewards β·r (``RunningMean``)."""
    rw, rl = _logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    if isinstance(delta, torch.Tensor):
        if delta.dim() > 1 or (delta.dim() == 1 and delta.shape != rw.shape):
            raise ValueError(f"delta must be a number, a 0-d tensor or shape {tuple(rw.shape)}, "
                             f"got {tuple(delta.shape)}")
        delta = delta.detach().to(rw.dtype)
        if not torch.isfinite(delta).all():
            raise ValueError("delta must be finite")
    else:
        delta = _finite("delta", delta)
    return -F.logsigmoid(beta * rw - delta) - F.logsigmoid(-(beta * rl - delta))


#: TRL's DPOConfig.loss_type names (methods.PAIR_LOSS_TYPES) -> per-sample loss; each takes (policy_chosen, policy_rejected,
#: reference_chosen, reference_rejected, *, beta=..., options) and returns (B,).
PAIR_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": sigmoid_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
    "robust": robust_loss,
    "apo_zero": apo_zero_loss,
    "apo_down": apo_down_loss,
    "bco_pair": bco_pair_loss,
}


def simpo_loss(policy_chosen, policy_rejected, chosen_tokens, rejected_tokens, *,
               beta: float, gamma: float) -> torch.Tensor:
    """SimPO, Meng et al. 2024 (arXiv 2405.14734) Eq. 6, reference-free:
    −log σ(β·log π(y_w)/|y_w| − β·log π(y_l)/|y_l| − γ), the average per-token log-prob as the reward and γ ≥ 0 a
    target margin. Takes summed log-probs and the answers' token counts. β and γ have no default: the paper tunes
    them per setup, at a scale (β ≈ 2–10) far from DPO's 0.1."""
    gamma = _finite("gamma", gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    x = _prepare({"policy_chosen": policy_chosen, "policy_rejected": policy_rejected}, beta)
    pc, pr = x["policy_chosen"], x["policy_rejected"]
    avg_w = pc / _counts("chosen_tokens", chosen_tokens, pc)
    avg_l = pr / _counts("rejected_tokens", rejected_tokens, pr)
    return -F.logsigmoid(beta * (avg_w - avg_l) - gamma)


# ---------------------------------------------------------------- MPO (arXiv 2411.10442)


def sft_loss(policy_chosen: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """MPO's generation loss L_gen = −log π(y_c|x) / |y_c| (arXiv 2411.10442 §3, as on the authors' model card):
    the chosen answer's negative mean per-token log-prob, from its summed log-prob and token count.

    Per sample; TRL's ``"sft"`` and InternVL's ``rpo_alpha`` NLL instead average over all chosen tokens of the
    batch (long answers weigh more) — equal when the answers have one length."""
    x = _prepare({"policy_chosen": policy_chosen})["policy_chosen"]
    return -x / _counts("chosen_tokens", chosen_tokens, x)


class RunningMean:
    """BCO's reward shift δ: the running mean of all rewards seen so far (starting at 0).

    ``update(x)`` folds in a tensor or number, weighting by element count: mean += (mean(x) − mean)·n/(count + n).
    TRL's ``bco_pair`` (which the MPO authors' code ran) feeds it one number per step, the batch mean of
    cat(β·r_w, β·r_l), then reads δ — so δ includes the current batch and equals the mean of the step means.
    Keep ``mean`` and ``count`` with a checkpoint to resume the same δ."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.count = 0

    def update(self, rewards: torch.Tensor | float) -> float:
        x = torch.as_tensor(rewards).detach().to(torch.float64).flatten()
        if x.numel() == 0 or not torch.isfinite(x).all():
            raise ValueError("RunningMean.update needs a non-empty, finite tensor or number")
        self.count += x.numel()
        self.mean += (x.mean().item() - self.mean) * x.numel() / self.count
        return self.mean


def mpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, chosen_tokens, *,
             beta: float = BETA, delta: float | torch.Tensor = 0.0,
             weights: Mapping[str, float] = MPO_WEIGHTS) -> LossOutput:
    """MPO, L = w_p·L_p + w_q·L_q + w_g·L_g (arXiv 2411.10442 §3): preference = DPO (``sigmoid_loss``), quality =
    BCO (``bco_pair_loss`` at δ), generation = SFT (``sft_loss``); each term averaged over the batch, default
    weights MPO_WEIGHTS (0.8, 0.2, 1.0). A weight-0 term is reported but left out of the sum (as in ``mdpo_loss``)."""
    if not isinstance(weights, Mapping) or set(weights) - set(MPO_WEIGHTS):
        raise ValueError(f"weights must map a subset of {sorted(MPO_WEIGHTS)} to numbers, got {weights!r}")
    w = {name: _finite(f"weights[{name!r}]", weights.get(name, 0.0)) for name in MPO_WEIGHTS}
    if any(v < 0 for v in w.values()) or not any(v > 0 for v in w.values()):
        raise ValueError(f"MPO weights must be >= 0 with at least one > 0, got {w}")
    pair = (policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    terms = {
        "preference": sigmoid_loss(*pair, beta=beta).mean(),
        "quality": bco_pair_loss(*pair, beta=beta, delta=delta).mean(),
        "generation": sft_loss(policy_chosen, chosen_tokens).mean(),
    }
    loss = sum(w[n] * v for n, v in terms.items() if w[n] > 0)
    rw, rl = _logratios(*pair, beta)
    chosen, rejected = (beta * rw).detach(), (beta * rl).detach()
    return LossOutput(loss=loss, terms=terms, rewards={"chosen": chosen, "rejected": rejected,
                                                       "margin": chosen - rejected})


# ---------------------------------------------------------------- CHiP (ICLR 2025, arXiv 2501.16629)


def chip_visual_loss(policy_chosen, policy_chosen_noised, reference_chosen, reference_chosen_noised, *,
                     beta: float = BETA) -> torch.Tensor:
    """CHiP's visual preference term (§3, "Visual Preference Optimization"): the chosen answer preferred under the
    real image m over m', a diffusion-noised copy of m (the authors' code: 500 of 1000 forward steps):
    −log σ(β·[r(y_w|m) − r(y_w|m')]), each r against the reference under the same image.

    Same shape as mDPO's conditional term (a different corruption). CHiP's other levels: response = DPO
    (``sigmoid_loss``); segment = DPO over token-weighted sums (``segment_weighted_logps``); token = TDPO's
    sequential-KL correction (``chip_token_loss``). The released trainer (LVUGAI/CHiP ``chip_loss``) adds the
    visual and token-level margins to the response logit inside one −log σ rather than summing separate losses."""
    x = _prepare({"policy_chosen": policy_chosen, "policy_chosen_noised": policy_chosen_noised,
                  "reference_chosen": reference_chosen, "reference_chosen_noised": reference_chosen_noised}, beta)
    r = implicit_rewards({"chosen": x["policy_chosen"], "chosen_corrupted": x["policy_chosen_noised"]},
                         {"chosen": x["reference_chosen"], "chosen_corrupted": x["reference_chosen_noised"]}, beta)
    return -F.logsigmoid(r["chosen"] - r["chosen_corrupted"])


def segment_weighted_logps(per_token_logps: torch.Tensor, loss_mask: torch.Tensor, segment_mask: torch.Tensor,
                           weight: float) -> torch.Tensor:
    """CHiP's segment level (§3, from RLHF-V's DDPO): Σ_t logp_t·(weight if t is in a segment that differs between
    chosen and rejected, else 1) over answer tokens, (B, T) -> (B,). Feed the policy's and the reference's sums
    to ``sigmoid_loss``. The authors' scripts use weight 4 (LLaVA-1.6) and 2 (Muffin); the masks come from a diff
    of the two answers' token ids, which is data-side work."""
    w = _finite("weight", weight)
    if w <= 0:
        raise ValueError(f"weight must be > 0, got {weight!r}")
    if not (isinstance(per_token_logps, torch.Tensor) and per_token_logps.is_floating_point()
            and per_token_logps.dim() == 2 and loss_mask.shape == per_token_logps.shape == segment_mask.shape):
        raise ValueError("per_token_logps (float), loss_mask and segment_mask must share one (B, T) shape")
    x = per_token_logps.to(torch.promote_types(per_token_logps.dtype, torch.float32))
    token_weight = torch.where(segment_mask.bool(), w, 1.0).to(x.dtype) * loss_mask.to(x.dtype)
    return (x * token_weight).sum(-1)


def sequential_kl(policy_logits: torch.Tensor, reference_logits: torch.Tensor,
                  loss_mask: torch.Tensor) -> torch.Tensor:
    """TDPO's sequential KL D_SeqKL(x, y; π_ref‖π) = Σ_t KL(π_ref(·|x, y_<t) ‖ π(·|x, y_<t)) over answer tokens:
    (B, T, V) logits of both models and a (B, T) mask -> (B,). Needs full-vocabulary logits, not just the
    answer tokens' log-probs — what ``chip_token_loss`` requires beyond the other terms."""
    if policy_logits.dim() != 3 or policy_logits.shape != reference_logits.shape or \
            loss_mask.shape != policy_logits.shape[:2]:
        raise ValueError("policy_logits and reference_logits must be (B, T, V) and loss_mask (B, T)")
    dtype = torch.promote_types(policy_logits.dtype, torch.float32)
    ref = reference_logits.detach().to(dtype).log_softmax(-1)
    kl = (ref.exp() * (ref - policy_logits.to(dtype).log_softmax(-1))).sum(-1)
    return (kl * loss_mask.to(dtype)).sum(-1)


def chip_token_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected,
                    seq_kl_chosen, seq_kl_rejected, *, beta: float = BETA, alpha: float = 0.1) -> torch.Tensor:
    """CHiP's token level = TDPO₂ (Zeng et al. 2024, arXiv 2404.11999) as CHiP's §3 adopts it (its Eq. 8 holds the
    stop-gradient, per the ICLR reviews; form checked against the authors' trainer, not the paper's text):
    −log σ(β·[x − α·(D_l − sg(D_w))]), D = ``sequential_kl`` of each answer. The rejected KL carries gradient, the
    chosen one is stopped; α = 0.1 is the authors' ``tok_beta`` in their scripts."""
    alpha = _finite("alpha", alpha)
    x = _prepare({"policy_chosen": policy_chosen, "policy_rejected": policy_rejected,
                  "reference_chosen": reference_chosen, "reference_rejected": reference_rejected,
                  "seq_kl_chosen": seq_kl_chosen, "seq_kl_rejected": seq_kl_rejected}, beta)
    logits = (x["policy_chosen"] - x["reference_chosen"]) - (x["policy_rejected"] - x["reference_rejected"])
    logits = logits - alpha * (x["seq_kl_rejected"] - x["seq_kl_chosen"].detach())
    return -F.logsigmoid(beta * logits)


# ---------------------------------------------------------------- SymMPO (NeurIPS 2025, arXiv 2506.11712)


def _symmpo_margins(args: dict[str, object], beta: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """h₁ = r(y|m) − r(y'|m), h₂ = r(y'|m') − r(y|m') from a function's ``locals()``, r = log π − log π_ref."""
    x = _prepare({k: v for k, v in args.items() if k.startswith(("policy_", "reference_"))}, beta)
    r = {k: x[f"policy_{k}"] - x[f"reference_{k}"] for k in ("y_m", "y2_m", "y2_m2", "y_m2")}
    return r["y_m"] - r["y2_m"], r["y2_m2"] - r["y_m2"]


def symmpo_symmetric_loss(*, policy_y_m, policy_y2_m, policy_y2_m2, policy_y_m2,
                          reference_y_m, reference_y2_m, reference_y2_m2, reference_y_m2,
                          beta: float = BETA) -> torch.Tensor:
    """SymMPO's symmetric preference term over a contrasting pair (m, y) and (m', y'), y' (``y2``) the preferred
    answer for the similar image m' (``m2``): under m, y ≻ y'; under m', y' ≻ y —
    −log σ(β·h₁) − log σ(β·h₂), h₁ = r(y|m) − r(y'|m), h₂ = r(y'|m') − r(y|m'), r = log π − log π_ref.

    Response pairs under one image, not one answer under two images: the paper's point is that the image-pair
    (mDPO/CHiP conditional) form compares two prompts, so DPO's partition function does not cancel. The image-pair
    reading is ``chip_visual_loss`` applied in each direction. Read from the authors' released trainer
    (Liuwq-bit/SymMPO ``muffin/train/trainers.py``), the paper's equation text not being available here; that
    trainer weights this term λ = 0.5 and adds DPO on (y_w, y_l | m) and the anchors −log σ(β·r(y|m)) and
    −log σ(β·r(y'|m'))."""
    h1, h2 = _symmpo_margins(locals(), beta)
    return -F.logsigmoid(beta * h1) - F.logsigmoid(beta * h2)


def symmpo_margin_consistency(*, policy_y_m, policy_y2_m, policy_y2_m2, policy_y_m2,
                              reference_y_m, reference_y2_m, reference_y2_m2, reference_y_m2) -> torch.Tensor:
    """SymMPO's preference-margin consistency regulariser (h₁ − h₂)², h as in ``symmpo_symmetric_loss`` (unscaled
    log-ratio margins): the two symmetric preferences should have equal margins. Form and weight (1e-4) read from
    the authors' released trainer, not checked against the paper's equation."""
    h1, h2 = _symmpo_margins(locals(), None)
    return (h1 - h2) ** 2


# ---------------------------------------------------------------- a method preset's loss


def method_loss(policy: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], *, weights: LossWeights,
                beta: float = BETA, delta: float = 0.0, chosen_tokens: torch.Tensor | None = None,
                quality_shift: float | torch.Tensor = 0.0) -> LossOutput:
    """The loss of a method (core/methods.METHODS): ``mdpo_loss``'s image terms, the pair term ``weights.pair_loss``
    in the dpo slot, MPO's quality (``bco_pair_loss`` at ``quality_shift``) and generation (``sft_loss``, from
    ``chosen_tokens``) terms, and SymMPO's terms. ``policy`` / ``reference``: the views' summed log-probs — chosen,
    rejected, optionally chosen with the corrupted image (m'), and for SymMPO the contrasting answer y' under the
    image and under m' (views 4 and 5). A method of the mDPO family gets ``mdpo_loss`` itself, bit for bit."""
    views = (5,) if weights.needs_contrast else (2, 3)
    if len(policy) != len(reference) or len(policy) not in views:
        raise ValueError(f"policy and reference need the {' or '.join(map(str, views))} views' log-probs each, got "
                         f"{len(policy)} and {len(reference)}")
    corrupted = (policy[2], reference[2]) if len(policy) >= 3 else (None, None)
    pair = (policy[0], policy[1], reference[0], reference[1])
    if not weights.beyond_mdpo:
        return mdpo_loss(*pair, *corrupted, beta=beta, delta=delta, weights=weights)
    if weights.sft > 0 and chosen_tokens is None:
        raise ValueError("weights.sft > 0 needs chosen_tokens, the chosen answers' token counts")
    # mdpo_loss computes the mDPO terms in play, the dpo slot left to another pair term when one fills it.
    mdpo_part = {t: getattr(weights, t) for t in TERMS} | ({} if weights.pair_loss == "sigmoid" else {"dpo": 0.0})
    base = (mdpo_loss(*pair, *corrupted, beta=beta, delta=delta, weights=LossWeights(**mdpo_part))
            if any(w > 0 for w in mdpo_part.values()) else None)
    # DPO's term is reported whichever term fills its slot (as mdpo_loss reports it at weight 0): runs compare on it.
    terms = dict(base.terms) if base is not None else {"dpo": sigmoid_loss(*pair, beta=beta).mean().detach()}
    loss = base.loss if base is not None else 0.0
    if weights.pair_loss != "sigmoid":
        terms[weights.pair_loss] = PAIR_LOSSES[weights.pair_loss](*pair, beta=beta).mean()
        loss = loss + weights.dpo * terms[weights.pair_loss]
    if weights.quality > 0:
        terms["quality"] = bco_pair_loss(*pair, beta=beta, delta=quality_shift).mean()
        loss = loss + weights.quality * terms["quality"]
    if weights.sft > 0:
        terms["sft"] = sft_loss(policy[0], chosen_tokens).mean()
        loss = loss + weights.sft * terms["sft"]
    if weights.needs_contrast:
        symmetric = _symmpo_terms(policy, reference, beta)
        for name in ("symmetric", "symmetric_anchor", "margin_consistency"):
            if getattr(weights, name) > 0:
                terms[name] = symmetric[name]
                loss = loss + getattr(weights, name) * terms[name]
    if base is not None:
        rewards = base.rewards
    else:
        rw, rl = _logratios(*pair, beta)
        chosen, rejected = (beta * rw).detach(), (beta * rl).detach()
        rewards = {"chosen": chosen, "rejected": rejected, "margin": chosen - rejected}
    return LossOutput(loss=loss, terms=terms, rewards=rewards)


def _symmpo_terms(policy: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
                  beta: float) -> dict[str, torch.Tensor]:
    """SymMPO's three terms (batch means) from the five views: y|m, y_l|m, y|m', y'|m, y'|m'."""
    names = {"y_m": 0, "y_m2": 2, "y2_m": 3, "y2_m2": 4}
    views = {f"policy_{k}": policy[i] for k, i in names.items()} | {
        f"reference_{k}": reference[i] for k, i in names.items()}
    own = _prepare({"policy_y2_m2": policy[4], "reference_y2_m2": reference[4]}, beta)
    # The anchor on y' under its own image, as mDPO's anchor (δ = 0) is on y under m.
    anchor = -F.logsigmoid(beta * (own["policy_y2_m2"] - own["reference_y2_m2"]))
    return {"symmetric": symmpo_symmetric_loss(**views, beta=beta).mean(),
            "symmetric_anchor": anchor.mean(),
            "margin_consistency": symmpo_margin_consistency(**views).mean()}
