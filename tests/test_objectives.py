"""core/objectives.py: hand-worked values, gradients, the DPO identity with mdpo_loss, detached references, errors.

Shared example (β = 0.1), summed log-probs policy vs reference (test_losses.py's):
  chosen            −10 vs −12  ->  r_w  =  2    β·r_w  =  0.2
  rejected          −15 vs −14  ->  r_l  = −1    β·r_l  = −0.1
  chosen, noised    −15 vs −11  ->  r_wc = −4    β·r_wc = −0.4
  x = r_w − r_l = 3, β·x = 0.3.   softplus(−z) = −log σ(z) = log(1 + e^{−z}):
  softplus(−0.3) = 0.5543552445   softplus(−0.2) = 0.5981388694   softplus(−0.1) = 0.6443966601
  softplus(−0.6) = 0.4374879505   softplus(0.3) = 0.3 + softplus(−0.3) = 0.8543552445
  σ(0.2) = 0.5498339973   σ(−0.1) = 0.4750208125   σ(0.3) = 0.5744425168
  σ(−0.2) = 0.4501660027  σ(−0.3) = 0.4255574832   σ(−0.6) = 0.3543436938
"""

import math

import pytest
import torch

from mdpo_pipeline.core import objectives as ob
from mdpo_pipeline.core.losses import mdpo_loss
from mdpo_pipeline.core.methods import METHODS, LossWeights

DPO, ANCHOR, ANCHOR_REJ = 0.5543552445, 0.5981388694, 0.6443966601


def _t(*v, grad=True, dtype=torch.float32):
    return torch.tensor(v, dtype=dtype, requires_grad=grad)


def _pair():
    """(policy_chosen, policy_rejected, reference_chosen, reference_rejected), B = 1, all requiring grad."""
    return _t(-10.0), _t(-15.0), _t(-12.0), _t(-14.0)


def _sym():
    """SymMPO: r(y|m) = −10 − (−12) = 2, r(y'|m) = −14 − (−13) = −1 -> h₁ = 3;
    r(y'|m') = −9 − (−10) = 1, r(y|m') = −16 − (−15) = −1 -> h₂ = 2."""
    return dict(policy_y_m=_t(-10.0), policy_y2_m=_t(-14.0), policy_y2_m2=_t(-9.0), policy_y_m2=_t(-16.0),
                reference_y_m=_t(-12.0), reference_y2_m=_t(-13.0), reference_y2_m2=_t(-10.0), reference_y_m2=_t(-15.0))


# ---------------------------------------------------------------- base pair losses


@pytest.mark.parametrize("name, kwargs, expected", [
    ("sigmoid", {}, DPO),                                              # −log σ(0.3)
    ("sigmoid", {"label_smoothing": 0.1}, 0.5843552445),               # 0.9·0.5543552445 + 0.1·0.8543552445
    ("robust", {"label_smoothing": 0.1}, 0.5168552445),                # (0.9·0.5543552445 − 0.1·0.8543552445) / 0.8
    ("robust", {"label_smoothing": 0.0}, DPO),                         # ε = 0 is DPO
    ("ipo", {}, 4.0),                                                  # (3 − 1/(2·0.1))² = (3 − 5)²
    ("hinge", {}, 0.7),                                                # relu(1 − 0.3)
    ("hinge", {"beta": 0.5}, 0.0),                                     # relu(1 − 1.5): margin 1/β = 2 < x = 3 met
    ("apo_zero", {}, 0.9251868152),                                    # 1 − σ(0.2) + σ(−0.1)
    ("apo_down", {}, 0.9753914805),                                    # σ(0.2) + 1 − σ(0.3)
    ("bco_pair", {}, ANCHOR + ANCHOR_REJ),                             # δ = 0: softplus(−0.2) + softplus(−0.1)
    ("bco_pair", {"delta": 0.05}, 1.2419140956),                       # 2·softplus(−0.15) = 2·log(1.8607079764)
    ("bco_pair", {"delta": torch.tensor(0.05)}, 1.2419140956),
])
def test_pair_loss_values(name, kwargs, expected):
    out = ob.PAIR_LOSSES[name](*_pair(), **kwargs)
    assert out.shape == (1,)
    assert out.item() == pytest.approx(expected, abs=1e-6)


def test_registry_names_follow_trl_and_share_one_signature():
    assert set(ob.PAIR_LOSSES) == {"sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down", "bco_pair"}
    t = lambda *v: torch.tensor(v)  # noqa: E731
    for fn in ob.PAIR_LOSSES.values():
        assert fn(t(-1.0, -2.0), t(-3.0, -1.0), t(-2.0, -2.0), t(-2.0, -2.0), beta=0.2).shape == (2,)


def test_sigmoid_equals_mdpo_loss_with_dpo_weights():
    """Batch of two (second: r_w = 0, r_l = 5, β·x = −0.5): same mean and same gradients as mdpo_loss's DPO."""
    a = [_t(-10.0, -20.0), _t(-15.0, -20.0), _t(-12.0, -20.0), _t(-14.0, -25.0)]
    b = [v.detach().clone().requires_grad_() for v in a]
    mine, theirs = ob.sigmoid_loss(*a).mean(), mdpo_loss(*b, weights=METHODS["dpo"]).loss
    assert mine.item() == pytest.approx(theirs.item(), abs=1e-7)
    assert mine.item() == pytest.approx((DPO + 0.9740769842) / 2, abs=1e-6)  # log(1 + e^{0.5}) = 0.9740769842
    mine.backward()
    theirs.backward()
    for u, v in zip(a[:2], b[:2]):
        assert torch.allclose(u.grad, v.grad)


def test_simpo_length_normalised():
    """β = 2, γ = 1: chosen −10 over 5 tokens (avg −2), rejected −15 over 5 (avg −3): z = 2·(−2 + 3) − 1 = 1,
    −log σ(1) = log(1 + e^{−1}) = 0.3132616875. Rejected −30 over 10 tokens has the same average: same loss."""
    for rejected, n in ((-15.0, 5), (-30.0, 10)):
        out = ob.simpo_loss(_t(-10.0), _t(rejected), torch.tensor([5]), torch.tensor([n]), beta=2.0, gamma=1.0)
        assert out.item() == pytest.approx(0.3132616875, abs=1e-6)


# ---------------------------------------------------------------- MPO


def test_bco_gradients_and_delta_is_a_constant():
    """dL/dπ_w = −β·σ(−(0.2 − δ)) = −0.1·σ(−0.2) = −0.0450166003 (raise the chosen);
    dL/dπ_l = +β·σ(−0.1 − δ) = 0.1·σ(−0.1) = 0.0475020813 (lower the rejected); δ gets no gradient."""
    pc, pr, rc, rr = _pair()
    delta = torch.tensor(0.0, requires_grad=True)
    ob.bco_pair_loss(pc, pr, rc, rr, delta=delta).sum().backward()
    assert pc.grad.item() == pytest.approx(-0.0450166003, abs=1e-7)
    assert pr.grad.item() == pytest.approx(0.0475020813, abs=1e-7)
    assert delta.grad is None


def test_running_mean_update_rule():
    """mean += (mean(x) − mean)·n/(count + n): [1, 3] -> 2; then 5 -> (1 + 3 + 5)/3 = 3. Fed one batch mean per step
    (TRL's use), it is the mean of the step means: 0.2, then −0.1 -> 0.05."""
    m = ob.RunningMean()
    assert (m.mean, m.count) == (0.0, 0)
    assert m.update(torch.tensor([1.0, 3.0])) == pytest.approx(2.0)
    assert m.update(5.0) == pytest.approx(3.0) and m.count == 3
    steps = ob.RunningMean()
    steps.update(torch.tensor([0.2, 0.2]).mean())
    assert steps.update(torch.tensor(-0.1)) == pytest.approx(0.05)


def test_sft_and_mpo_combination():
    """SFT: −(−10)/4 tokens = 2.5. MPO (0.8, 0.2, 1.0): 0.8·0.5543552445 + 0.2·1.2425355295 + 2.5 = 3.1919913015.
    Weights {preference: 1} alone give DPO; rewards are β·r, detached."""
    assert ob.sft_loss(_t(-10.0), torch.tensor([4])).item() == pytest.approx(2.5)
    out = ob.mpo_loss(*_pair(), torch.tensor([4]))
    assert out.loss.item() == pytest.approx(3.1919913015, abs=1e-6)
    assert {k: round(v.item(), 6) for k, v in out.terms.items()} == {
        "preference": round(DPO, 6), "quality": round(ANCHOR + ANCHOR_REJ, 6), "generation": 2.5}
    assert out.metrics()["rewards/margins"] == pytest.approx(0.3, abs=1e-6)
    assert ob.mpo_loss(*_pair(), torch.tensor([4]), weights={"preference": 1}).loss.item() == pytest.approx(DPO, 1e-6)
    assert ob.MPO_WEIGHTS == {"preference": 0.8, "quality": 0.2, "generation": 1.0}


# ---------------------------------------------------------------- CHiP


def test_chip_visual_equals_mdpo_conditional_and_gradients():
    """x = β·(r_w − r_wc) = 0.1·(2 + 4) = 0.6 -> 0.4374879505, mdpo_loss's conditional term. dL/dπ(y_w|m) =
    −β·σ(−0.6) = −0.0354343694 (raise it under the real image), dL/dπ(y_w|m') = +0.0354343694 (lower under noise)."""
    pc, pn, rc, rn = _t(-10.0), _t(-15.0), _t(-12.0), _t(-11.0)
    out = ob.chip_visual_loss(pc, pn, rc, rn)
    mdpo = mdpo_loss(pc, _t(-15.0), rc, _t(-14.0), pn, rn, weights=LossWeights(dpo=0, conditional=1))
    assert out.item() == pytest.approx(0.4374879505, abs=1e-6)
    assert out.item() == pytest.approx(mdpo.terms["conditional"].item(), abs=1e-7)
    out.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.0354343694, abs=1e-7)
    assert pn.grad.item() == pytest.approx(0.0354343694, abs=1e-7)


def test_chip_token_level():
    """α = 0.5, D_w = 1, D_l = 3: β·[3 − 0.5·(3 − 1)] = 0.2 -> 0.5981388694. dL/dD_l = β·α·σ(−0.2) = 0.0225083001
    (> 0: descent lowers the rejected answer's sequential KL from the reference); D_w is stopped: no gradient."""
    kw, kl = _t(1.0), _t(3.0)
    out = ob.chip_token_loss(*_pair(), kw, kl, alpha=0.5)
    assert out.item() == pytest.approx(ANCHOR, abs=1e-6)
    out.sum().backward()
    assert kl.grad.item() == pytest.approx(0.0225083001, abs=1e-7)
    assert kw.grad is None
    # α = 0 is DPO.
    assert ob.chip_token_loss(*_pair(), kw, kl, alpha=0.0).item() == pytest.approx(DPO, abs=1e-6)


def test_sequential_kl_and_segment_weights():
    """KL(π_ref ‖ π) with π_ref = (½, ½), π = (¾, ¼): ½·log(½/¾) + ½·log(½/¼) = ½·log(4/3) = 0.1438410362; the
    masked second position adds nothing; identical models give 0.
    Segment weights: tokens (−1, −2, −3, −4), mask (0, 1, 1, 1), segment (0, 0, 1, 0), γ = 4: −2 − 4·3 − 4 = −18."""
    ref = torch.zeros(1, 2, 2)
    pol = torch.tensor([[[math.log(3.0), 0.0], [5.0, 0.0]]])
    mask = torch.tensor([[1, 0]])
    assert ob.sequential_kl(pol, ref, mask).item() == pytest.approx(0.1438410362, abs=1e-6)
    assert ob.sequential_kl(ref, ref, mask).item() == pytest.approx(0.0, abs=1e-7)
    logps = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])
    out = ob.segment_weighted_logps(logps, torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 0]]), 4.0)
    assert out.tolist() == [-18.0]


# ---------------------------------------------------------------- SymMPO


def test_symmpo_symmetric_term_and_gradients():
    """−log σ(0.1·3) − log σ(0.1·2) = 0.5543552445 + 0.5981388694 = 1.1524941139. Gradients: under m, y up
    (−β·σ(−0.3) = −0.0425557483) and y' down (+0.0425557483); under m', y' up (−β·σ(−0.2) = −0.0450166003), y down."""
    x = _sym()
    out = ob.symmpo_symmetric_loss(**x)
    assert out.item() == pytest.approx(1.1524941139, abs=1e-6)
    out.sum().backward()
    grads = {k: x[k].grad.item() for k in ("policy_y_m", "policy_y2_m", "policy_y2_m2", "policy_y_m2")}
    assert grads == pytest.approx({"policy_y_m": -0.0425557483, "policy_y2_m": 0.0425557483,
                                   "policy_y2_m2": -0.0450166003, "policy_y_m2": 0.0450166003}, abs=1e-7)


def test_symmpo_margin_consistency():
    """(h₁ − h₂)² = (3 − 2)² = 1; d/dh₁ = 2(h₁ − h₂) = 2: descent narrows h₁ (π(y|m) down, π(y'|m) up) and widens
    h₂ (π(y'|m') up, π(y|m') down) until the margins agree."""
    x = _sym()
    out = ob.symmpo_margin_consistency(**x)
    assert out.item() == pytest.approx(1.0)
    out.sum().backward()
    assert [x[k].grad.item() for k in ("policy_y_m", "policy_y2_m", "policy_y2_m2", "policy_y_m2")] == [2, -2, -2, 2]


# ---------------------------------------------------------------- references, dtype, stability


def _reference_cases():
    for name, fn in ob.PAIR_LOSSES.items():
        yield name, lambda fn=fn: (fn, _pair(), {})
    yield "chip_visual", lambda: (ob.chip_visual_loss, _pair(), {})
    yield "chip_token", lambda: (ob.chip_token_loss, (*_pair(), _t(1.0), _t(3.0)), {})
    yield "symmpo", lambda: (ob.symmpo_symmetric_loss, (), _sym())
    yield "symmpo_margin", lambda: (ob.symmpo_margin_consistency, (), _sym())


@pytest.mark.parametrize("name, case", list(_reference_cases()))
def test_no_gradient_reaches_reference(name, case):
    fn, args, kwargs = case()
    fn(*args, **kwargs).sum().backward()
    refs = [a for i, a in enumerate(args) if i in (2, 3)] + [v for k, v in kwargs.items() if k.startswith("reference")]
    assert refs and all(r.grad is None for r in refs)


def test_low_precision_promoted_and_large_margins_finite():
    """bf16 in -> float32 out, the float32 value; β·x = ±1000 stays finite (log σ(−1000) would be −inf)."""
    x = [torch.tensor([v], dtype=torch.bfloat16) for v in (-10.0, -15.0, -12.0, -14.0)]
    out = ob.sigmoid_loss(*x)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(DPO, abs=1e-6)
    for s in (1.0, -1.0):
        big = (_t(5000.0 * s), _t(-5000.0 * s), _t(0.0), _t(0.0))
        for fn in (ob.sigmoid_loss, ob.bco_pair_loss, ob.robust_loss, ob.chip_visual_loss):
            loss = fn(*big)
            loss.sum().backward()
            assert torch.isfinite(loss).all() and torch.isfinite(big[0].grad).all()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(ob.PAIR_LOSSES))
@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan"), float("inf")])
def test_error_beta(name, beta):
    with pytest.raises(ValueError, match="beta must be finite and > 0"):
        ob.PAIR_LOSSES[name](*_pair(), beta=beta)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ob.sigmoid_loss(_t(0.0), _t(0.0, 0.0), _t(0.0), _t(0.0)), ValueError, r"shape mismatch: policy_rejected"),
    (lambda: ob.ipo_loss(*(torch.zeros(1, 1),) * 4), ValueError, r"must have shape \(B,\)"),
    (lambda: ob.hinge_loss(*(torch.zeros(1, dtype=torch.long),) * 4), TypeError, "floating-point"),
    (lambda: ob.sigmoid_loss(*_pair(), label_smoothing=0.6), ValueError, r"label_smoothing must be in \[0, 0.5\]"),
    (lambda: ob.robust_loss(*_pair(), label_smoothing=0.5), ValueError, r"\[0, 0.5\) for robust"),
    (lambda: ob.bco_pair_loss(*_pair(), delta=float("nan")), ValueError, "delta must be a finite number"),
    (lambda: ob.bco_pair_loss(*_pair(), delta=torch.zeros(3)), ValueError, "delta must be a number"),
    (lambda: ob.sft_loss(_t(-1.0), torch.tensor([0])), ValueError, "chosen_tokens must be finite and > 0"),
    (lambda: ob.sft_loss(_t(-1.0), torch.tensor([1, 2])), ValueError, r"chosen_tokens must be a tensor of shape"),
    (lambda: ob.simpo_loss(_t(-1.0), _t(-2.0), torch.tensor([1]), torch.tensor([1]), beta=2.0, gamma=-1.0),
     ValueError, "gamma must be >= 0"),
    (lambda: ob.mpo_loss(*_pair(), torch.tensor([4]), weights={"sft": 1.0}), ValueError, "subset of"),
    (lambda: ob.mpo_loss(*_pair(), torch.tensor([4]), weights={"quality": 0.0}), ValueError, "at least one > 0"),
    (lambda: ob.chip_token_loss(*_pair(), _t(1.0), _t(1.0, 2.0)), ValueError, "shape mismatch: seq_kl_rejected"),
    (lambda: ob.segment_weighted_logps(torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 2), 2.0), ValueError,
     r"share one \(B, T\) shape"),
    (lambda: ob.sequential_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.ones(1, 2)), ValueError,
     r"\(B, T, V\)"),
    (lambda: ob.symmpo_symmetric_loss(**(_sym() | {"reference_y_m2": _t(0.0, 0.0)})), ValueError, "reference_y_m2"),
    (lambda: ob.RunningMean().update(torch.tensor([float("nan")])), ValueError, "non-empty, finite"),
])
def test_bad_inputs_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- method presets (method_loss)


def test_pair_loss_names_are_the_methods_list():
    from mdpo_pipeline.core.methods import PAIR_LOSS_TYPES

    assert tuple(ob.PAIR_LOSSES) == PAIR_LOSS_TYPES


@pytest.mark.parametrize("method", [m for m in METHODS if not METHODS[m].beyond_mdpo])
def test_an_mdpo_family_method_is_mdpo_loss_bit_for_bit(method):
    pc, pr, rc, rr = _pair()
    pcc, rcc = _t(-15.0), _t(-11.0)
    got = ob.method_loss((pc, pr, pcc), (rc, rr, rcc), weights=METHODS[method])
    want = mdpo_loss(pc, pr, rc, rr, pcc, rcc, weights=METHODS[method])
    assert torch.equal(got.loss, want.loss) and got.terms.keys() == want.terms.keys()


def test_mdpo_loss_refuses_weights_beyond_its_terms():
    with pytest.raises(ValueError, match="method_loss computes them"):
        mdpo_loss(*_pair(), weights=METHODS["mpo"])


def test_ipo_method_is_the_ipo_term_and_still_reports_dpo():
    # IPO: (x − 1/(2β))² = (3 − 5)² = 4; DPO's term reported beside it, outside the loss.
    out = ob.method_loss(_pair()[:2], _pair()[2:], weights=METHODS["ipo"])
    assert out.loss.item() == pytest.approx(4.0)
    assert out.terms["ipo"].item() == pytest.approx(4.0) and out.terms["dpo"].item() == pytest.approx(DPO)
    assert out.rewards["margin"].item() == pytest.approx(0.3)


def test_mpo_method_is_mpo_loss_and_needs_token_counts():
    pc, pr, rc, rr = _pair()
    tokens = torch.tensor([4.0])
    got = ob.method_loss((pc, pr), (rc, rr), weights=METHODS["mpo"], chosen_tokens=tokens, quality_shift=0.05)
    want = ob.mpo_loss(pc, pr, rc, rr, tokens, delta=0.05)
    # 0.8·DPO + 0.2·BCO(δ = 0.05) + 1.0·(10 / 4):
    # BCO = −log σ(0.2 − 0.05) − log σ(−(−0.1 − 0.05)) = 2·softplus(−0.15) = 2 · 0.6209570
    assert got.loss.item() == pytest.approx(want.loss.item(), abs=1e-6)
    assert got.loss.item() == pytest.approx(0.8 * DPO + 0.2 * 2 * 0.6209570 + 2.5, abs=1e-6)
    with pytest.raises(ValueError, match="needs chosen_tokens"):
        ob.method_loss((pc, pr), (rc, rr), weights=METHODS["mpo"])


def test_mdpo_over_mpo_adds_the_image_terms_to_mpo():
    pc, pr, rc, rr = _pair()
    pcc, rcc = _t(-15.0), _t(-11.0)
    tokens = torch.tensor([4.0])
    both = ob.method_loss((pc, pr, pcc), (rc, rr, rcc), weights=METHODS["mdpo_mpo"], chosen_tokens=tokens)
    mpo = ob.method_loss((pc, pr), (rc, rr), weights=METHODS["mpo"], chosen_tokens=tokens)
    image = mdpo_loss(pc, pr, rc, rr, pcc, rcc, weights=LossWeights(0, 1, 1))
    assert both.loss.item() == pytest.approx(mpo.loss.item() + image.loss.item(), abs=1e-6)
    assert {"conditional", "anchor", "quality", "sft"} <= both.terms.keys()


def test_symmpo_method_is_dpo_its_anchors_and_the_symmetric_terms_at_the_authors_weights():
    # Views y|m, y_l|m, y|m', y'|m, y'|m' (policy, reference), one example; β = 0.1.
    p = [_t(v) for v in (-10.0, -12.0, -13.0, -14.0, -9.0)]
    r = [_t(v) for v in (-11.0, -11.0, -12.0, -13.0, -10.0)]
    out = ob.method_loss(p, r, weights=METHODS["symmpo"], beta=0.1)
    # rewards r = p − ref: y|m +1, y_l|m −1, y|m' −1, y'|m −1, y'|m' +1
    # DPO: −log σ(0.1·(1 − (−1))) = softplus(−0.2); anchor on y|m: softplus(−0.1)
    # h1 = r(y|m) − r(y'|m) = 2, h2 = r(y'|m') − r(y|m') = 2: symmetric = 2·softplus(−0.2), consistency 0
    # anchor on y'|m': softplus(−0.1)
    def softplus(x):
        return math.log1p(math.exp(x))

    want = softplus(-0.2) + softplus(-0.1) + 0.5 * 2 * softplus(-0.2) + softplus(-0.1)
    assert out.loss.item() == pytest.approx(want, abs=1e-6)
    assert out.terms["symmetric"].item() == pytest.approx(2 * softplus(-0.2), abs=1e-6)
    assert out.terms["margin_consistency"].item() == 0.0
    out.loss.backward()
    # y|m' only enters through h2 (pushed down), y'|m' through h2 and its anchor (pushed up).
    assert p[2].grad.item() > 0 and p[4].grad.item() < 0
    assert all(t.grad is None for t in r)
    with pytest.raises(ValueError, match="5 views"):
        ob.method_loss(p[:3], r[:3], weights=METHODS["symmpo"])
