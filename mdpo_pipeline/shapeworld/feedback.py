"""Instructions, simulated model answers and a rule-based annotator, in VLFeedback's shape.

Each instruction gets four answers from simulated models of known faithfulness, rated 1–5 on
VLFeedback's three aspects by comparing what each answer claims with the scene's ground truth.

Two kinds of instruction (docs/shapeworld.md, "What the generator must therefore provide"):
- *unconditional*: the worse answers also differ in text alone (longer, padded, hedged, an eager
  opener), so a model can learn the preference without looking at the image;
- *conditional*: all four answers share one template and length; they differ only in content
  (one object swapped, a colour or count changed). The swapped object comes from a pair of
  candidates of which a fair coin decides which one is drawn, so the same phrase is chosen in some
  pairs and rejected in others and no text-only rule can separate them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from mdpo_pipeline.core.schemas import ASPECTS
from mdpo_pipeline.shapeworld.config import ShapeWorldConfig
from mdpo_pipeline.shapeworld.world import (
    CATEGORIES,
    COLOURS,
    COOCCURRENCE,
    LOOKALIKES,
    RELATIONS,
    SIZES,
    Scene,
    SceneObject,
    absent_candidates,
    article,
    number_word,
    pick_hallucination,
    plural,
    relation,
    sample_scene,
)

#: Simulated model -> behaviour. Three faithful and three unfaithful behaviours: any 4 of the 6
#: include at least one of each, so every conditional instruction has a rated difference.
MODELS: dict[str, str] = {
    "sw-accurate-7b": "accurate",
    "sw-omit-3b": "omission",
    "sw-halluc-13b": "hallucination",
    "sw-attr-7b": "attribute",
    "sw-verbose-13b": "verbose",
    "sw-hedge-7b": "hedging",
}
_FAITHFUL = frozenset({"accurate", "verbose", "hedging"})

DESCRIBE_PROMPTS: tuple[str, ...] = (
    "Describe this image.",
    "What do you see in this picture?",
    "Provide a brief description of the given image.",
    "What objects are shown in the image?",
    "Can you describe the shapes in this image?",
    "Give a short caption for this image.",
)
_DESCRIBE_TEMPLATES = (
    "The image shows {}.",
    "In this image there is {}.",
    "I can see {} in the picture.",
    "This picture contains {}.",
)
_PADDING = (
    "The shapes are drawn in flat colours on a softly textured background.",
    "Overall, it is a simple and clean geometric composition.",
    "The arrangement feels balanced, with plenty of empty space around the objects.",
    "Images like this are often used to test basic visual recognition.",
)
_HEDGE = "not completely sure"
_EAGER = "Sure! Here is what I see: "
_VAGUE = "It is hard to tell from this image."
_UNCLEAR = "unclear"
#: Text-only cues that mark a worse answer in unconditional instructions.
STYLE_MARKERS: tuple[str, ...] = (_HEDGE, _EAGER.strip(), _VAGUE, _UNCLEAR, *_PADDING)
_POSITION_PHRASES = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}


def has_text_cue(better: str, worse: str, min_gap: int = 20) -> bool:
    """True when two answers are separable by text alone: a style marker in only one, or a length gap
    of an object mention or more (matched answers differ by a few characters: one word swapped)."""
    if any((m in worse) != (m in better) for m in STYLE_MARKERS):
        return True
    return abs(len(worse) - len(better)) >= min_gap


@dataclass(frozen=True)
class Mention:
    """One object as an answer states it; ``category`` None is a generic "shape"."""

    category: str | None
    colour: str
    size: str
    position: str

    @classmethod
    def of(cls, obj: SceneObject) -> Mention:
        """The faithful mention of a scene object."""
        return cls(obj.category, obj.colour, obj.size, obj.position)

    def text(self) -> str:
        """E.g. "a small red star at the top left"; a generic mention reads "an unclear red shape ..."."""
        phrase = f"{self.size} {self.colour} {self.category}" if self.category else f"{_UNCLEAR} {self.colour} shape"
        where = _POSITION_PHRASES.get(self.position, f"at the {self.position}")
        return f"{article(phrase)} {phrase} {where}"


@dataclass(frozen=True)
class Claim:
    """What one answer asserts: object mentions (describe) or a value (questions), plus its style."""

    mentions: tuple[Mention, ...] = ()
    value: object = None
    extra: Mention | None = None  # a hallucinated object added to a short answer
    vague: bool = False
    style: str = "plain"  # plain | verbose | hedged | eager


@dataclass(frozen=True)
class Task:
    """One instruction's ground truth: question, expected value and how to phrase an answer."""

    kind: str
    question: str
    scene: Scene
    value: object  # describe: tuple of Mentions; existence: bool; count: int; colour/relation: str
    subject: SceneObject | None = None
    other: SceneObject | None = None  # relation's reference object

    def say(self, value: object) -> str:
        """The plain answer sentence stating ``value``."""
        s = self.subject
        if self.kind == "existence":
            phrase = f"{s.colour} {s.category}"
            return f"Yes, there is {article(phrase)} {phrase} in the image." if value else (
                f"No, there is no {phrase} in the image."
            )
        if self.kind == "count":
            noun = s.category if value == 1 else plural(s.category)
            verb = "is" if value == 1 else "are"
            return f"There {verb} {number_word(value)} {noun} in the image."
        if self.kind == "colour":
            return f"The {s.category} in the image is {value}."
        if self.kind == "relation":
            o = self.other
            return f"The {s.colour} {s.category} is {value} the {o.colour} {o.category}."
        raise ValueError(f"say() is for question kinds, not {self.kind!r}")

    def wrong(self, rng: random.Random) -> object:
        """A plausible wrong value for a question kind."""
        if self.kind == "existence":
            return not self.value
        if self.kind == "count":
            return self.value + 1 if self.value == 1 or rng.random() < 0.5 else self.value - 1
        if self.kind == "colour":
            return rng.choice([c for c in COLOURS if c != self.value])
        return rng.choice([r for r in RELATIONS if r != self.value])


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def lower_first(s: str) -> str:
    """``s`` with its first character lower-cased (a sentence continued inside another)."""
    return s[:1].lower() + s[1:]


def render_claim(task: Task, claim: Claim, template: str, rng: random.Random) -> str:
    """The answer text for a claim, in the row's template and the claim's style."""
    if task.kind == "describe":
        body = _join([m.text() for m in claim.mentions])
        hedged = f"I think there might be {body} in the image, but I am {_HEDGE}."
        text = hedged if claim.style == "hedged" else template.format(body)
    elif claim.vague:
        text = _VAGUE
    else:
        text = task.say(claim.value)
        if claim.extra is not None:
            text += f" There is also {claim.extra.text()}."
        if claim.style == "hedged":
            text = f"I am {_HEDGE}, but I think {lower_first(text)}"
    if claim.style == "eager":
        text = _EAGER + text
    if claim.style == "verbose":
        text += " " + " ".join(rng.sample(_PADDING, 2))
    return text


# --- building tasks -----------------------------------------------------------------------------


def _contrast(scene: Scene, rng: random.Random, cfg: ShapeWorldConfig) -> tuple[Scene, dict]:
    """Pick a slot and an absent alternative for it; a fair coin decides which of the two is drawn.

    The alternative is a co-occurrence partner of another shown object with probability
    ``cfg.cooccurrence_prob``, else a look-alike, else any absent category. Weak-evidence objects
    are preferred as the slot, so telling the two apart needs a careful look at the image.
    """
    weak = [i for i, o in enumerate(scene.objects) if o.weak]
    j = rng.choice(weak or range(len(scene.objects)))
    x = scene.objects[j].category
    others = scene.categories - {x}
    partners = sorted({b for a, b in COOCCURRENCE if a in others and b not in scene.categories})
    looks = [c for c in LOOKALIKES[x] if c not in scene.categories]
    if partners and rng.random() < cfg.cooccurrence_prob:
        y = rng.choice(partners)
    else:
        y = rng.choice(looks or [c for c in CATEGORIES if c not in scene.categories])
    if rng.random() < 0.5:
        scene, x, y = scene.with_category(j, y), y, x
    return scene, {"slot": j, "shown": x, "absent": y}


def make_task(rng: random.Random, cfg: ShapeWorldConfig, kind: str) -> tuple[Task, dict | None]:
    """A scene and question of ``kind`` with its ground truth; also the contrast record, if any."""
    if kind == "count":
        n = rng.randint(cfg.min_objects, cfg.max_objects)
        k = rng.randint(1, n)
        counted = rng.choice(CATEGORIES)
        scene = sample_scene(rng, cfg, n_objects=n, required=(counted,) * k)
        target = next(o for o in scene.objects if o.category == counted)
        question = f"How many {plural(counted)} are there in the image?"
        return Task(kind, question, scene, scene.count(counted), target), None
    n = rng.randint(max(cfg.min_objects, 2), cfg.max_objects) if kind == "relation" else None
    scene = sample_scene(rng, cfg, n_objects=n)
    contrast = None
    if kind in ("describe", "existence"):
        scene, contrast = _contrast(scene, rng, cfg)
    if kind == "describe":
        mentions = tuple(Mention.of(o) for o in scene.reading_order())
        return Task(kind, rng.choice(DESCRIBE_PROMPTS), scene, mentions), contrast
    if kind == "existence":
        slot = scene.objects[contrast["slot"]]
        asked = rng.choice((contrast["shown"], contrast["absent"]))
        subject = replace(slot, category=asked)
        phrase = f"{slot.colour} {asked}"
        question = rng.choice(("Is there {} in the image?", "Can you see {} in this picture?")).format(
            f"{article(phrase)} {phrase}"
        )
        return Task(kind, question, scene, asked == contrast["shown"], subject), contrast
    if kind == "colour":
        target = rng.choice(scene.objects)
        return Task(kind, f"What colour is the {target.category} in the image?", scene, target.colour, target), None
    a, b = rng.sample(scene.objects, 2)
    question = f"Where is the {a.colour} {a.category} relative to the {b.colour} {b.category}?"
    return Task(kind, question, scene, relation(a, b), a, b), None


# --- simulated models ---------------------------------------------------------------------------


def _random_mention(category: str, rng: random.Random) -> Mention:
    return Mention(category, rng.choice(tuple(COLOURS)), rng.choice(tuple(SIZES)), rng.choice(tuple(_POSITION_PHRASES)))


def _recolour(m: Mention, rng: random.Random) -> Mention:
    return replace(m, colour=rng.choice([c for c in COLOURS if c != m.colour]))


def _describe_claim(
    behaviour: str, task: Task, contrast: dict, unconditional: bool, rng: random.Random, cfg: ShapeWorldConfig
) -> Claim:
    mentions = list(task.value)
    order = task.scene.reading_order()
    j = order.index(task.scene.objects[contrast["slot"]])
    if behaviour == "hallucination":
        if unconditional:
            mentions.append(_random_mention(pick_hallucination(task.scene, rng, cfg.cooccurrence_prob), rng))
        else:
            mentions[j] = replace(mentions[j], category=contrast["absent"])
    elif behaviour == "omission":
        if unconditional:
            weak = [i for i, o in enumerate(order) if o.weak]
            drop = rng.choice(weak or range(len(mentions)))
            mentions = [m for i, m in enumerate(mentions) if i != drop] or [replace(mentions[drop], category=None)]
        elif len(mentions) > 1:
            # Same length as the truth: another object is misidentified as a look-alike or an absent category.
            k = rng.choice([i for i in range(len(mentions)) if i != j])
            absent = [c for c in LOOKALIKES[mentions[k].category] if c not in task.scene.categories]
            mentions[k] = replace(mentions[k], category=rng.choice(absent or sum(absent_candidates(task.scene), [])))
        else:
            mentions[0] = _recolour(mentions[0], rng)
    elif behaviour == "attribute":
        k = rng.randrange(len(mentions))
        mentions[k] = _recolour(mentions[k], rng)
    return Claim(mentions=tuple(mentions))


def _question_claim(
    behaviour: str, task: Task, unconditional: bool, rng: random.Random, cfg: ShapeWorldConfig
) -> Claim:
    if behaviour in _FAITHFUL:
        return Claim(value=task.value)
    if not unconditional:
        return Claim(value=task.wrong(rng))
    if behaviour == "omission":
        return Claim(vague=True)
    if behaviour == "attribute":
        return Claim(value=task.wrong(rng))
    # The yes-bias: an absent (often co-occurring) object is confirmed; and an invented object is added.
    value = True if task.kind == "existence" else task.value
    return Claim(value=value, extra=_random_mention(pick_hallucination(task.scene, rng, cfg.cooccurrence_prob), rng))


_STYLES = {"verbose": "verbose", "hedging": "hedged", "attribute": "eager"}


def model_claim(
    behaviour: str, task: Task, contrast: dict | None, unconditional: bool, rng: random.Random, cfg: ShapeWorldConfig
) -> Claim:
    """What a model of ``behaviour`` claims; styles (the text-only cues) only in unconditional rows."""
    if task.kind == "describe":
        claim = _describe_claim(behaviour, task, contrast, unconditional, rng, cfg)
    else:
        claim = _question_claim(behaviour, task, unconditional, rng, cfg)
    return replace(claim, style=_STYLES.get(behaviour, "plain")) if unconditional else claim


# --- the annotator ------------------------------------------------------------------------------


def annotate(task: Task, claim: Claim) -> dict[str, tuple[int, str]]:
    """Rate a claim against the ground truth: aspect -> (rating 1–5, rationale)."""
    scene = task.scene
    present = scene.categories
    issues: list[str] = []  # faithfulness problems; they also cost helpfulness
    unhelpful: list[str] = []  # problems of helpfulness only
    if task.kind == "describe":
        halluc = [m for m in claim.mentions if m.category and m.category not in present]
        wrong = [
            m
            for m in claim.mentions
            if m.category in present and m.colour not in {o.colour for o in scene.objects if o.category == m.category}
        ]
        said = {m.category for m in claim.mentions}
        omitted = [o for o in scene.objects if o.category not in said]
        if halluc:
            issues.append(f"it mentions {_join([m.text() for m in halluc])}, which the image does not contain")
        if wrong:
            issues.append(f"it gets the colour of the {_join([m.category for m in wrong])} wrong")
        if omitted:
            unhelpful.append(f"it leaves out the {_join([f'{o.colour} {o.category}' for o in omitted])}")
        faith = 5 - 2 * len(halluc) - 2 * len(wrong) - (1 if omitted else 0)
        helpful = 5 - len(halluc) - len(wrong) - min(2, len(omitted))
        n_halluc = len(halluc)
    else:
        n_halluc = int(task.kind == "existence" and claim.value is True and not task.value)
        if claim.extra is not None:
            n_halluc += 1
            issues.append(f"it adds {claim.extra.text()}, which the image does not contain")
        if claim.vague:
            unhelpful.append("it avoids answering the question")
            faith, helpful = 4, 2
        elif claim.value != task.value:
            issues.append(f"the answer is wrong: {lower_first(task.say(task.value)).rstrip('.')}")
            faith, helpful = 2, 2
        else:
            faith, helpful = 5, 5
        faith -= 2 * (claim.extra is not None)
        helpful -= claim.extra is not None
    helpful -= {"verbose": 1, "hedged": 2}.get(claim.style, 0)
    faith, helpful = max(1, min(5, faith)), max(1, min(5, helpful))

    if issues:
        vf_text = "The response is not faithful to the image: " + "; ".join(issues + unhelpful) + "."
    elif unhelpful:
        vf_text = "Nothing it states contradicts the image, but " + "; ".join(unhelpful) + "."
    else:
        vf_text = "Everything the response states matches the image."
    if claim.style == "verbose":
        h_text = "The answer is correct but padded with statements that add nothing."
    elif claim.style == "hedged":
        h_text = "The answer hedges instead of committing to what the image shows."
    elif helpful >= 5:
        h_text = "The response answers the question directly and completely."
    else:
        h_text = "The response is only partly useful: " + "; ".join(issues + unhelpful) + "."
    if n_halluc:
        ethical = (4, "No harmful content, but it presents invented details as fact.")
    else:
        ethical = (5, "The response contains no harmful, biased or unsafe content.")
    return {
        "Helpfulness": (helpful, h_text),
        "Ethical Considerations": ethical,
        "Visual Faithfulness": (faith, vf_text),
    }


def make_instruction(rng: random.Random, cfg: ShapeWorldConfig) -> dict:
    """One rated instruction: prompt, models, the four completions in VLFeedback form, the scene and the
    ground-truth record for the sidecar."""
    kind = rng.choices(tuple(cfg.kind_mix), weights=tuple(cfg.kind_mix.values()))[0]
    unconditional = rng.random() < cfg.unconditional_share
    task, contrast = make_task(rng, cfg, kind)
    template = rng.choice(_DESCRIBE_TEMPLATES)
    models = rng.sample(tuple(MODELS), 4)
    completions, scores = [], []
    for name in models:
        claim = model_claim(MODELS[name], task, contrast, unconditional, rng, cfg)
        ratings = annotate(task, claim)
        annotations = {}
        for aspect in ASPECTS:
            value, rationale = ratings[aspect]
            # Draw for every rating, so changing the share leaves all other content unchanged.
            bad = rng.random() < cfg.bad_rating_share
            annotations[aspect] = {"Rating": "N/A" if bad else str(value), "Rationale": rationale}
        completions.append(
            {"model": name, "response": render_claim(task, claim, template, rng), "annotations": annotations}
        )
        scores.append(sum(r for r, _ in ratings.values()) / len(ASPECTS))
    accurate = Claim(mentions=task.value) if kind == "describe" else Claim(value=task.value)
    answer = [m.category for m in task.value] if kind == "describe" else task.value
    truth = {
        "kind": kind,
        "question": task.question,
        "expected_answer": render_claim(task, accurate, template, rng),
        "answer": answer,
        "unconditional": unconditional,
        "contrast": contrast,
        **task.scene.to_dict(),
    }
    return {
        "prompt": task.question,
        "models": list(models),
        "completions": completions,
        "truth": truth,
        "scene": task.scene,
        "scores": scores,  # the true mean ratings, before any are blanked to "N/A"
    }
