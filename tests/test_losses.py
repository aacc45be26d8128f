"""mDPO loss family: hand-worked values, gradient signs, reduction to DPO, stability, metrics, errors.

Shared worked example (β = 0.1, δ = 0), summed log-probs policy vs reference:
  chosen            −10 vs −12  ->  r_w  =  2   β·r_w  =  0.2
  rejected          −15 vs −14  ->  r_l  = −1   β·r_l  = −0.1
  chosen, corrupted −15 vs −11  ->  r_wc = −4   β·r_wc = −0.4
Every term is softplus(−x) = −log σ(x) = log(1 + e^{−x}) of a logit x:
  dpo              x = 0.2 − (−0.1) = 0.3   log(1 + e^{−0.3}) = log 1.7408182207 = 0.5543552445
  conditional      x = 0.2 − (−0.4) = 0.6   log(1 + e^{−0.6}) = log 1.5488116361 = 0.4374879505
  anchor           x = 0.2 − 0      = 0.2   log(1 + e^{−0.2}) = log 1.8187307531 = 0.5981388694
  anchor_rejected  x = 0 − (−0.1)   = 0.1   log(1 + e^{−0.1}) = log 1.9048374180 = 0.6443966601
  anchor_corrupted x = 0 − (−0.4)   = 0.4   log(1 + e^{−0.4}) = log 1.6703200460 = 0.5130152524
d softplus(−x)/dx = −σ(−x); σ(−0.3) = 0.4255574832, σ(−0.6) = 0.3543436938, σ(−0.2) = 0.4501660027,
σ(−0.1) = 0.4750208125, σ(−0.4) = 0.4013123399.
"""

import dataclasses
import math

import pytest
import torch

from mdpo_pipeline.core.losses import LossOutput, dpo_loss, mdpo_loss
from mdpo_pipeline.core.methods import METHODS, LossWeights

DPO = 0.5543552445
COND = 0.4374879505
ANCHOR = 0.5981388694
ANCHOR_REJ = 0.6443966601
ANCHOR_CORR = 0.5130152524


def _inputs(grad: bool = True):
    """The shared worked example as (B=1,) float32 tensors; policy tensors require grad."""
    t = lambda v, g: torch.tensor([v], dtype=torch.float32, requires_grad=g)
    return {
        "policy_chosen": t(-10.0, grad),
        "policy_rejected": t(-15.0, grad),
        "reference_chosen": t(-12.0, grad),
        "reference_rejected": t(-14.0, grad),
        "policy_chosen_corrupted": t(-15.0, grad),
        "reference_chosen_corrupted": t(-11.0, grad),
    }


def _run(weights: LossWeights, **kw) -> LossOutput:
    x = _inputs()
    return mdpo_loss(*x.values(), weights=weights, **kw)


# ---------------------------------------------------------------- each term alone


def test_dpo_term_alone():
    """DPO: x = β(r_w − r_l) = 0.1·(2 − (−1)) = 0.3; −log σ(0.3) = log(1 + e^{−0.3}) = 0.5543552445."""
    out = dpo_loss(*list(_inputs().values())[:4])
    assert out.loss.item() == pytest.approx(DPO, abs=1e-6)
    assert set(out.terms) == {"dpo"}


def test_conditional_term_alone():
    """CoPO: x = β(r_w − r_wc) = 0.1·(2 − (−4)) = 0.6; log(1 + e^{−0.6}) = 0.4374879505."""
    out = _run(LossWeights(dpo=0, conditional=1))
    assert out.loss.item() == pytest.approx(COND, abs=1e-6)
    assert out.terms["conditional"].item() == pytest.approx(COND, abs=1e-6)
    # DPO is always reported, even at weight 0, but does not enter the loss.
    assert out.terms["dpo"].item() == pytest.approx(DPO, abs=1e-6)


def test_anchor_term_alone():
    """AncPO: x = β·r_w − δ = 0.2 − 0 = 0.2; log(1 + e^{−0.2}) = 0.5981388694."""
    out = _run(LossWeights(dpo=0, anchor=1))
    assert out.loss.item() == pytest.approx(ANCHOR, abs=1e-6)
    assert set(out.terms) == {"dpo", "anchor"}


def test_delta_shifts_anchor():
    """δ = 0.5: x = 0.2 − 0.5 = −0.3; log(1 + e^{0.3}) = 0.3 + log(1 + e^{−0.3}) = 0.8543552445.

    δ = −0.1: x = 0.3, the DPO value 0.5543552445. DPO and CoPO do not depend on δ.
    """
    hi = _run(LossWeights(1, 1, 1), delta=0.5)
    assert hi.terms["anchor"].item() == pytest.approx(0.8543552445, abs=1e-6)
    assert hi.terms["dpo"].item() == pytest.approx(DPO, abs=1e-6)
    assert hi.terms["conditional"].item() == pytest.approx(COND, abs=1e-6)
    lo = _run(LossWeights(dpo=0, anchor=1), delta=-0.1)
    assert lo.loss.item() == pytest.approx(DPO, abs=1e-6)


def test_extra_anchors():
    """anchor_rejected: x = δ − β·r_l = 0 + 0.1 = 0.1 -> 0.6443966601;
    anchor_corrupted: x = δ − β·r_wc = 0 + 0.4 = 0.4 -> 0.5130152524.
    With δ = 0.2 they become x = 0.3 -> 0.5543552445 and x = 0.6 -> 0.4374879505.
    """
    rej = _run(LossWeights(dpo=0, anchor_rejected=1))
    assert rej.loss.item() == pytest.approx(ANCHOR_REJ, abs=1e-6)
    corr = _run(LossWeights(dpo=0, anchor_corrupted=1))
    assert corr.loss.item() == pytest.approx(ANCHOR_CORR, abs=1e-6)
    shifted = _run(LossWeights(0, 0, 0, 1, 1), delta=0.2)
    assert shifted.terms["anchor_rejected"].item() == pytest.approx(DPO, abs=1e-6)
    assert shifted.terms["anchor_corrupted"].item() == pytest.approx(COND, abs=1e-6)


# ---------------------------------------------------------------- combinations


def test_mdpo_is_sum_of_terms():
    """mDPO = 0.5543552445 + 0.4374879505 + 0.5981388694 = 1.5899820643."""
    out = _run(METHODS["mdpo"])
    assert out.loss.item() == pytest.approx(1.5899820643, abs=1e-6)
    assert set(out.terms) == {"dpo", "conditional", "anchor"}
    assert out.loss.item() == pytest.approx(sum(v.item() for v in out.terms.values()), abs=1e-6)


def test_anchor_all_and_weights():
    """All five: 1.5899820643 + 0.6443966601 + 0.5130152524 = 2.7473939768.
    Weights (2, 0.5, 0, 0, 3): 2·0.5543552445 + 0.5·0.4374879505 + 3·0.5130152524 = 2.8665002215.
    """
    assert _run(METHODS["mdpo_anchor_all"]).loss.item() == pytest.approx(2.7473939768, abs=1e-6)
    out = _run(LossWeights(2, 0.5, 0, 0, 3))
    assert out.loss.item() == pytest.approx(2.8665002215, abs=1e-6)
    # terms are unweighted means.
    assert out.terms["anchor_corrupted"].item() == pytest.approx(ANCHOR_CORR, abs=1e-6)


def test_ablations():
    """no_conditional = 0.5543552445 + 0.5981388694 = 1.1524941139;
    no_anchor = 0.5543552445 + 0.4374879505 = 0.9918431950."""
    assert _run(METHODS["mdpo_no_conditional"]).loss.item() == pytest.approx(1.1524941139, abs=1e-6)
    assert _run(METHODS["mdpo_no_anchor"]).loss.item() == pytest.approx(0.9918431950, abs=1e-6)
    # The anchor-only ablation must not demand corrupted inputs.
    x = list(_inputs().values())[:4]
    assert mdpo_loss(*x, weights=METHODS["mdpo_no_conditional"]).loss.item() == pytest.approx(1.1524941139, abs=1e-6)


def test_batch_mean():
    """Sample 1 is the worked example (DPO 0.5543552445). Sample 2: chosen −20 vs −20 (r_w = 0), rejected
    −20 vs −25 (r_l = 5): x = 0.1·(0 − 5) = −0.5, log(1 + e^{0.5}) = 0.9740769842.
    Mean = (0.5543552445 + 0.9740769842) / 2 = 0.7642161143. Anchor: sample 2 x = 0 -> log 2 = 0.6931471806,
    mean (0.5981388694 + 0.6931471806) / 2 = 0.6456430250.
    """
    t = lambda *v: torch.tensor(v, requires_grad=True)
    out = mdpo_loss(t(-10.0, -20.0), t(-15.0, -20.0), t(-12.0, -20.0), t(-14.0, -25.0), weights=LossWeights(1, 0, 1))
    assert out.terms["dpo"].item() == pytest.approx(0.7642161143, abs=1e-6)
    assert out.terms["anchor"].item() == pytest.approx(0.6456430250, abs=1e-6)
    assert out.loss.shape == ()
    assert out.rewards["margin"].tolist() == pytest.approx([0.3, -0.5], abs=1e-6)
    m = out.metrics()
    assert m["rewards/accuracies"] == pytest.approx(0.5)
    assert m["rewards/margins"] == pytest.approx(-0.1, abs=1e-6)


# ---------------------------------------------------------------- gradients


def test_dpo_gradient_signs_and_values():
    """dL/dπ_w = −β·σ(−0.3) = −0.1·0.4255574832 = −0.0425557483 (< 0: descent raises the chosen
    likelihood); dL/dπ_l = +0.0425557483 (> 0: descent lowers the rejected likelihood)."""
    x = _inputs()
    dpo_loss(*list(x.values())[:4]).loss.backward()
    assert x["policy_chosen"].grad.item() == pytest.approx(-0.0425557483, abs=1e-6)
    assert x["policy_rejected"].grad.item() == pytest.approx(0.0425557483, abs=1e-6)


def test_mdpo_gradient_signs():
    """mDPO: dL/dπ_w = −0.1·(σ(−0.3) + σ(−0.6) + σ(−0.2)) = −0.1·1.2300671797 = −0.1230067180;
    dL/dπ_l = +0.0425557483; dL/dπ(y_w|m_l) = +β·σ(−0.6) = +0.0354343694 > 0: the conditional term
    makes gradient descent LOWER the corrupted-image likelihood of the chosen answer."""
    x = _inputs()
    mdpo_loss(*x.values(), weights=METHODS["mdpo"]).loss.backward()
    assert x["policy_chosen"].grad.item() == pytest.approx(-0.1230067180, abs=1e-6)
    assert x["policy_rejected"].grad.item() == pytest.approx(0.0425557483, abs=1e-6)
    assert x["policy_chosen_corrupted"].grad.item() == pytest.approx(0.0354343694, abs=1e-6)
    assert x["policy_chosen_corrupted"].grad.item() > 0


def test_extra_anchor_gradient_signs():
    """anchor_rejected: dL/dπ_l = +β·σ(−0.1) = 0.0475020813; anchor_corrupted: dL/dπ(y_w|m_l) =
    +β·σ(−0.4) = 0.0401312340. Both > 0: descent pushes those rewards down, towards/below δ."""
    x = _inputs()
    mdpo_loss(*x.values(), weights=LossWeights(0, 0, 0, 1, 1)).loss.backward()
    assert x["policy_rejected"].grad.item() == pytest.approx(0.0475020813, abs=1e-6)
    assert x["policy_chosen_corrupted"].grad.item() == pytest.approx(0.0401312340, abs=1e-6)
    assert x["policy_chosen"].grad is None or x["policy_chosen"].grad.item() == 0.0


def test_no_gradient_reaches_reference():
    """References are constants: even with requires_grad=True they get no .grad; rewards are detached."""
    x = _inputs()
    out = mdpo_loss(*x.values(), weights=METHODS["mdpo_anchor_all"])
    out.loss.backward()
    for name in ("reference_chosen", "reference_rejected", "reference_chosen_corrupted"):
        assert x[name].grad is None, name
    assert all(not r.requires_grad for r in out.rewards.values())


# ---------------------------------------------------------------- reduction, stability, dtype


def test_reduces_to_dpo_with_corrupted_inputs_passed():
    """LossWeights(1, 0, 0) with corrupted inputs gives exactly dpo_loss's value and gradients."""
    a, b = _inputs(), _inputs()
    full = mdpo_loss(*a.values(), weights=LossWeights(1, 0, 0))
    plain = dpo_loss(*list(b.values())[:4])
    assert full.loss.item() == pytest.approx(plain.loss.item(), abs=1e-6)
    assert full.loss.item() == pytest.approx(DPO, abs=1e-6)
    assert set(full.terms) == {"dpo"}
    full.loss.backward()
    plain.loss.backward()
    assert a["policy_chosen"].grad.item() == pytest.approx(b["policy_chosen"].grad.item(), abs=1e-9)
    assert a["policy_chosen_corrupted"].grad is None or a["policy_chosen_corrupted"].grad.item() == 0.0
    # Corrupted inputs only add diagnostics.
    assert "chosen_corrupted" in full.rewards and "chosen_corrupted" not in plain.rewards


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_stable_at_large_margins(sign):
    """|β·margin| = 1000: chosen ±5000 vs 0, rejected ∓5000 vs 0 -> β(r_w − r_l) = ±1000.
    +1000: loss = log(1 + e^{−1000}) ≈ 0; −1000: loss = log(1 + e^{1000}) = 1000 (float32 exact).
    Naive log(sigmoid(−1000)) is log(0) = −inf, with NaN gradients."""
    pc = torch.tensor([5000.0 * sign], requires_grad=True)
    pr = torch.tensor([-5000.0 * sign], requires_grad=True)
    pcc = torch.tensor([-5000.0 * sign], requires_grad=True)
    zero = torch.zeros(1)
    out = mdpo_loss(pc, pr, zero, zero, pcc, zero, weights=METHODS["mdpo_anchor_all"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for t in (pc, pr, pcc):
        assert torch.isfinite(t.grad).all()
    expected_dpo = 0.0 if sign > 0 else 1000.0
    assert out.terms["dpo"].item() == pytest.approx(expected_dpo, abs=1e-6)
    # At −1000 the sigmoid saturates: dL/dπ_w = −β·σ(1000) = −0.1.
    assert pc.grad.item() == pytest.approx(0.0 if sign > 0 else -0.3, abs=1e-6)
    assert not math.isfinite(torch.log(torch.sigmoid(torch.tensor(-1000.0))).item())


def test_low_precision_inputs_computed_in_float32():
    """bf16 inputs: rewards come out float32 and the value matches the float32 example (0.5543552445)."""
    x = {k: v.detach().to(torch.bfloat16).requires_grad_(k.startswith("policy")) for k, v in _inputs().items()}
    out = dpo_loss(*list(x.values())[:4])
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(DPO, abs=1e-6)
    out.loss.backward()
    assert x["policy_chosen"].grad.dtype == torch.bfloat16


# ---------------------------------------------------------------- METHODS, weights, metrics


def test_methods_table():
    assert METHODS["dpo"] == LossWeights(1.0, 0.0, 0.0, 0.0, 0.0)
    assert METHODS["dpo_no_image"] == METHODS["dpo"]
    assert METHODS["mdpo"] == LossWeights(dpo=1, conditional=1, anchor=1)
    assert METHODS["mdpo_no_conditional"] == LossWeights(dpo=1, anchor=1)
    assert METHODS["mdpo_no_anchor"] == LossWeights(dpo=1, conditional=1)
    assert METHODS["mdpo_anchor_all"] == LossWeights(1, 1, 1, 1, 1)
    needs = {name: w.needs_corrupted for name, w in METHODS.items()}
    assert needs == {
        "dpo": False,
        "mdpo": True,
        "mdpo_no_conditional": False,
        "mdpo_no_anchor": True,
        "mdpo_anchor_all": True,
        "dpo_no_image": False,
        "ipo": False,
        "hinge": False,
        "apo_zero": False,
        "mpo": False,
        "mdpo_mpo": True,
        "chip": True,
        "symmpo": True,
    }
    assert {name for name, w in METHODS.items() if w.needs_contrast} == {"symmpo"}
    assert METHODS["chip"] == METHODS["mdpo_no_anchor"]  # the same terms over another corrupted image
    assert LossWeights(dpo=0, anchor_corrupted=0.5).needs_corrupted
    assert isinstance(METHODS["mdpo"].anchor, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS["mdpo"].anchor = 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"anchor": -1.0}, "anchor must be finite and >= 0"),
        ({"conditional": float("nan")}, "conditional must be finite"),
        ({"dpo": float("inf")}, "dpo must be finite"),
        ({"dpo": 0.0}, "at least one weight must be > 0"),
    ],
)
def test_loss_weights_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossWeights(**kwargs)


def test_loss_weights_rejects_non_numbers():
    with pytest.raises(TypeError, match="dpo must be a number"):
        LossWeights(dpo="1")


def test_metrics_keys_and_values():
    """Worked example: rewards chosen 0.2, rejected −0.1, margin 0.3, chosen_corrupted −0.4,
    conditional margin 0.2 − (−0.4) = 0.6; both accuracies 1.0."""
    m = _run(METHODS["mdpo"]).metrics()
    assert set(m) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "rewards/chosen_corrupted",
        "rewards/conditional_margins",
        "rewards/conditional_accuracies",
        "loss/dpo",
        "loss/conditional",
        "loss/anchor",
    }
    assert all(type(v) is float for v in m.values())
    assert m["rewards/chosen"] == pytest.approx(0.2, abs=1e-6)
    assert m["rewards/rejected"] == pytest.approx(-0.1, abs=1e-6)
    assert m["rewards/margins"] == pytest.approx(0.3, abs=1e-6)
    assert m["rewards/accuracies"] == 1.0
    assert m["rewards/chosen_corrupted"] == pytest.approx(-0.4, abs=1e-6)
    assert m["rewards/conditional_margins"] == pytest.approx(0.6, abs=1e-6)
    assert m["rewards/conditional_accuracies"] == 1.0
    assert m["loss/conditional"] == pytest.approx(COND, abs=1e-6)


def test_metrics_without_corrupted_and_accuracy_counts():
    """Three samples with margins β·(r_w − r_l) = 0.3, 0 (tie), −0.2: accuracy counts strict > 0 -> 1/3."""
    pc = torch.tensor([-10.0, -5.0, -5.0])
    rc = torch.tensor([-12.0, -5.0, -5.0])
    pr = torch.tensor([-15.0, -5.0, -3.0])
    rr = torch.tensor([-14.0, -5.0, -5.0])
    m = dpo_loss(pc, pr, rc, rr).metrics()
    assert set(m) == {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "loss/dpo"}
    assert m["rewards/accuracies"] == pytest.approx(1 / 3)
    assert m["rewards/margins"] == pytest.approx((0.3 + 0.0 - 0.2) / 3, abs=1e-6)


# ---------------------------------------------------------------- errors


def test_error_missing_corrupted_names_the_weight():
    x = list(_inputs().values())[:4]
    with pytest.raises(ValueError, match=r"conditional=1\.0 need policy_chosen_corrupted"):
        mdpo_loss(*x, weights=METHODS["mdpo"])
    with pytest.raises(ValueError, match=r"anchor_corrupted=2\.0"):
        mdpo_loss(*x, weights=LossWeights(dpo=1, anchor_corrupted=2))
    with pytest.raises(ValueError, match="both .* or neither"):
        mdpo_loss(*x, torch.zeros(1), weights=METHODS["dpo"])


def test_error_shapes():
    x = _inputs()
    with pytest.raises(ValueError, match=r"shape mismatch: policy_rejected has \(2,\), expected \(1,\)"):
        mdpo_loss(
            x["policy_chosen"], torch.zeros(2), x["reference_chosen"], x["reference_rejected"], weights=METHODS["dpo"]
        )
    with pytest.raises(ValueError, match=r"reference_chosen_corrupted has \(3,\)"):
        mdpo_loss(*list(x.values())[:5], torch.zeros(3))
    with pytest.raises(ValueError, match=r"policy_chosen must have shape \(B,\)"):
        dpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"B >= 1"):
        dpo_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0))
    with pytest.raises(TypeError, match="reference_rejected must be a floating-point torch.Tensor"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan"), float("inf")])
def test_error_beta(beta):
    with pytest.raises(ValueError, match="beta must be finite and > 0"):
        dpo_loss(*list(_inputs().values())[:4], beta=beta)


@pytest.mark.parametrize("delta", [float("nan"), float("inf")])
def test_error_delta(delta):
    with pytest.raises(ValueError, match="delta must be finite"):
        _run(METHODS["mdpo"], delta=delta)


def test_beta_scales_rewards():
    """β = 1: x = 2 − (−1) = 3; log(1 + e^{−3}) = log 1.0497870684 = 0.0485873516; chosen reward 2."""
    out = dpo_loss(*list(_inputs().values())[:4], beta=1.0)
    assert out.loss.item() == pytest.approx(0.0485873516, abs=1e-6)
    assert out.metrics()["rewards/chosen"] == pytest.approx(2.0, abs=1e-6)
