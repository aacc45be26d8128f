"""Object HalBench's rule-based CHAIR: a CHAIR synonym table, object extraction, CHAIR_s / CHAIR_i / recall.

Follows FACTS §5 and the CHAIR scorer (Rohrbach et al. 2018) as Object HalBench uses it:

- an answer is tokenised and lower-cased, every word is tried as written and as its noun lemma
  (``lemminflect``, which ships its data), and phrases are matched longest first, so "half moon"
  is one mention of ``half moon`` and never also a ``moon``;
- each matched phrase maps through the synonym list to its canonical category;
- ground truth of an image = its COCO instance categories ∪ the categories found the same way in its
  reference captions;
- CHAIR_s = answers with ≥ 1 hallucinated mention / answers; CHAIR_i = hallucinated mentions / all
  mentions (repeats count, as in CHAIR); recall = distinct truth categories mentioned / truth
  categories, summed over answers.

All metrics are fractions in [0, 1] (papers print them ×100); an empty denominator gives 0.
Pure Python: no Dagster, no torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lemminflect import getLemma

#: An LLM (or any) object extractor: answer text -> the object words or phrases it names.
Extractor = Callable[[str], Sequence[str]]

# Hyphenated words stay whole (as NLTK's tokenizer keeps them) and are split only when the whole is
# unknown; a trailing apostrophe part ("man's", "can't") stays attached so it cannot become a word.
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; a possessive "'s" is dropped ("man's" -> "man")."""
    return [tok.removesuffix("'s") for tok in _TOKEN.findall(text.lower().replace("\u2019", "'"))]


@lru_cache(maxsize=1 << 16)
def noun_forms(word: str) -> tuple[str, ...]:
    """The word as written, then its noun lemmas ("stars" -> ("stars", "star"); "leaves" -> (…, "leave", "leaf"))."""
    forms = [word]
    if word.isalpha():
        for lemma in getLemma(word, upos="NOUN"):
            lemma = lemma.lower()
            if lemma not in forms:
                forms.append(lemma)
    return tuple(forms)


def _normalise(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def expand_tokens(tokens: Iterable[str], known: Callable[[str], bool]) -> list[str]:
    """Split a hyphenated token into its parts unless the whole word (or its lemma) is ``known``."""
    out: list[str] = []
    for tok in tokens:
        if "-" in tok and not any(known(f) for f in noun_forms(tok)):
            out.extend(p for p in tok.split("-") if p)
        else:
            out.append(tok)
    return out


# --- synonym table ------------------------------------------------------------------------------


#: CHAIR's hard-coded COCO rules. Compounds count as one word: most are objects of the list, while
#: "home plate" and "train track" name none and only keep "train" (etc.) from firing. A qualifier such
#: as "baby" or "passenger" is itself a `person` synonym, so "baby bird" / "passenger train" count as
#: the second word only. "bow tie" is a tie, a "toilet seat" is the toilet (not a chair).
_COCO_COMPOUNDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "laptop computer", "home plate", "train track",
)
_COCO_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
COCO_DOUBLE_WORDS: dict[str, str] = {
    **{c: c for c in _COCO_COMPOUNDS},
    **{f"{q} {a}": a for q in ("baby", "adult") for a in _COCO_ANIMALS},
    **{f"passenger {v}": v for v in ("jet", "train")},
    "bow tie": "tie",
    "toilet seat": "toilet",
}
#: CHAIR drops the word "seat" from an answer that also says "toilet" ("the seat of the toilet").
COCO_DROP_WHEN: dict[str, str] = {"seat": "toilet"}


@dataclass(frozen=True)
class Mention:
    """One object mention: the table phrase matched (the lemma form when matched by lemma), its category
    and the index of its first token."""

    phrase: str
    category: str
    start: int


@dataclass(frozen=True)
class SynonymTable:
    """CHAIR's synonym list: phrase -> canonical category (the first entry of its line).

    ``double_words`` are CHAIR-style two-word rules (phrase -> phrase it counts as; a target that is
    not an object just consumes the words); ``drop_when`` drops a phrase when another phrase is also
    mentioned. Both are empty unless the table was built with ``coco_rules=True``.
    """

    phrases: Mapping[str, str]
    double_words: Mapping[str, str] = field(default_factory=dict)
    drop_when: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.phrases:
            raise ValueError("a synonym table needs at least one phrase")
        longest = max(len(p.split()) for p in (*self.phrases, *self.double_words))
        object.__setattr__(self, "_max_len", longest)

    @classmethod
    def from_lines(cls, lines: Iterable[str], *, coco_rules: bool = False, source: str = "<lines>") -> SynonymTable:
        """Parse CHAIR-format lines ("canonical, synonym1, synonym2, ..."); later lines win a clash, as in CHAIR."""
        phrases: dict[str, str] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            entries = [_normalise(e) for e in line.split(",")]
            entries = [e for e in entries if e]
            for entry in entries:
                if tokenize(entry) != entry.split():
                    raise ValueError(
                        f"{source}:{number}: {entry!r} is not a plain word phrase; expected CHAIR synonym lines "
                        "like 'canonical, synonym1, synonym2'"
                    )
            for entry in entries:
                phrases[entry] = entries[0]
        if not phrases:
            raise ValueError(f"{source}: no synonym lines found (expected 'canonical, synonym1, ...' per line)")
        if not coco_rules:
            return cls(phrases)
        return cls(phrases, dict(COCO_DOUBLE_WORDS), dict(COCO_DROP_WHEN))

    @classmethod
    def from_file(cls, path: str | Path, *, coco_rules: bool = False) -> SynonymTable:
        """Load a CHAIR synonyms.txt; ``coco_rules`` adds CHAIR's hard-coded COCO double-word rules."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"synonym list {path} not found: supply a CHAIR-format synonyms.txt (for COCO, CHAIR's own "
                "80-category list; for ShapeWorld, the synonyms.txt written by generate_benchmarks)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None
        return cls.from_lines(text.splitlines(), coco_rules=coco_rules, source=str(path))

    @property
    def categories(self) -> tuple[str, ...]:
        """Canonical categories, sorted."""
        return tuple(sorted(set(self.phrases.values())))

    def _known(self, word: str) -> bool:
        return word in self.phrases or word in self.double_words

    def _lookup(self, forms: Sequence[tuple[str, ...]]) -> tuple[str, str | None] | None:
        """(matched phrase, category or None) for a window of tokens given as their noun forms."""
        raw = [f[0] for f in forms]
        # As written; then the head (last) word inflected; then every word lemmatised, as CHAIR does.
        candidates = [" ".join(raw)]
        candidates += [" ".join([*raw[:-1], lemma]) for lemma in forms[-1][1:]]
        candidates.append(" ".join(f[1] if len(f) > 1 else f[0] for f in forms))
        for phrase in candidates:
            if phrase in self.double_words:
                # Reported as the phrase it counts as ("toilet seat" -> "toilet"), as CHAIR's word list does.
                target = self.double_words[phrase]
                return target, self.phrases.get(target)
            if phrase in self.phrases:
                return phrase, self.phrases[phrase]
        return None

    def mentions(self, text: str) -> list[Mention]:
        """Object mentions in ``text``, in order; longer phrases win over the single words inside them."""
        tokens = expand_tokens(tokenize(text), self._known)
        forms = [noun_forms(t) for t in tokens]
        found: list[Mention] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self._max_len, len(tokens) - i), 0, -1):
                hit = self._lookup(forms[i : i + n])
                if hit is not None:
                    phrase, category = hit
                    if category is not None:
                        found.append(Mention(phrase, category, i))
                    i += n
                    break
            else:
                i += 1
        if self.drop_when:
            said = {m.phrase for m in found}
            found = [m for m in found if self.drop_when.get(m.phrase) not in said]
        return found

    def objects(self, text: str) -> list[str]:
        """Canonical categories mentioned in ``text``, in order, repeats kept."""
        return [m.category for m in self.mentions(text)]

    def canonical(self, phrase: str) -> str:
        """The category a whole phrase names ("moons" -> "half moon"); ValueError when it names none."""
        words = tokenize(phrase)
        hit = self._lookup([noun_forms(w) for w in words]) if words else None
        if hit is None or hit[1] is None:
            raise ValueError(f"{phrase!r} is not in the synonym list (categories: {', '.join(self.categories)})")
        return hit[1]


# --- scoring ------------------------------------------------------------------------------------


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass(frozen=True)
class ChairAnswer:
    """One answer's detail: what it mentions, which mentions are hallucinated, which truths it covers."""

    mentioned: tuple[str, ...]  #: canonical categories in order, repeats kept
    words: tuple[str, ...]  #: the table phrases matched, aligned with ``mentioned``
    hallucinated: tuple[str, ...]  #: mentions whose category is not in the truth, repeats kept
    covered: tuple[str, ...]  #: distinct truth categories mentioned, sorted
    truth: tuple[str, ...]  #: the image's truth categories, sorted
    unmatched: tuple[str, ...] = ()  #: extractor outputs that name no category in the list

    @property
    def chair_i(self) -> float:
        """This answer's hallucinated mentions / mentions."""
        return _ratio(len(self.hallucinated), len(self.mentioned))

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "mentioned": list(self.mentioned),
            "words": list(self.words),
            "hallucinated": list(self.hallucinated),
            "covered": list(self.covered),
            "truth": list(self.truth),
            "unmatched": list(self.unmatched),
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

    def as_dict(self, detail: bool = False) -> dict:
        """Metrics and counts (flat, for logging); ``detail`` adds the per-answer records."""
        out = {k: getattr(self, k) for k in (
            "chair_s", "chair_i", "recall", "n_answers", "n_hallucinated_answers", "n_mentions",
            "n_hallucinated_mentions", "n_truth", "n_covered", "extractor",
        )}
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
    """CHAIR_s, CHAIR_i and recall of ``answers`` against per-answer truth categories (FACTS §5).

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
        chair_s=_ratio(n_bad, len(per_answer)),
        chair_i=_ratio(n_halluc, n_mentions),
        recall=_ratio(n_covered, n_truth),
        n_answers=len(per_answer),
        n_hallucinated_answers=n_bad,
        n_mentions=n_mentions,
        n_hallucinated_mentions=n_halluc,
        n_truth=n_truth,
        n_covered=n_covered,
        extractor="rule" if extract is None else "custom",
        per_answer=tuple(per_answer),
    )


# --- Object HalBench files ----------------------------------------------------------------------


@dataclass(frozen=True)
class HalBenchItem:
    """One Object HalBench prompt: the COCO image id, its image file name and the description prompt."""

    image_id: int
    image: str
    question: str


@dataclass(frozen=True)
class ObjectHalBench:
    """The benchmark's prompts, each image's truth categories and the synonym table to score with."""

    items: tuple[HalBenchItem, ...]
    truth: Mapping[int, frozenset[str]]
    table: SynonymTable
    image_dir: Path | None = None

    def score(self, answers: Mapping[int, str], *, extract: Extractor | None = None) -> ChairResult:
        """CHAIR of answers keyed by image id (in the benchmark's item order)."""
        unknown = sorted(set(answers) - set(self.truth))
        if unknown:
            raise KeyError(f"answers for image ids not in the benchmark: {unknown[:10]}")
        ids = [it.image_id for it in self.items if it.image_id in answers]
        return chair_scores([answers[i] for i in ids], [self.truth[i] for i in ids], self.table, extract=extract)


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"Object HalBench: {path} not found; supply {what}")
    return path


def _read_json(path: Path, what: str):
    _need(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"Object HalBench: {path} is not valid JSON ({exc}); expected {what}") from None


def _field(row: object, key: str, source: str):
    if not isinstance(row, Mapping) or key not in row:
        raise ValueError(f"{source}: missing field {key!r} in {str(row)[:120]}")
    return row[key]


def read_questions(path: str | Path) -> list[HalBenchItem]:
    """Read a prompt file: JSON lines with ``image_id`` and ``question`` (RLHF-V's obj_halbench_300_with_image.jsonl,
    whose ``image`` is base64, or ShapeWorld's prompts.jsonl, whose ``image`` is a file name)."""
    path = _need(Path(path), "the prompt file (JSON lines with image_id and question)")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not a JSON line ({exc})") from None
        image_id = _field(row, "image_id", where)
        question = _field(row, "question", where)
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or not str(image_id).isdigit():
            raise ValueError(f"{where}: image_id must be a COCO integer id, got {image_id!r}")
        image_id = int(image_id)
        image = row.get("image")
        # RLHF-V embeds the picture as base64 under "image"; only a short file name is kept.
        if not (isinstance(image, str) and len(image) < 256 and image.lower().endswith((".jpg", ".jpeg", ".png"))):
            image = f"COCO_val2014_{image_id:012d}.jpg"
        items.append(HalBenchItem(image_id, image, str(question)))
    if not items:
        raise ValueError(f"{path}: no prompts found")
    return items


def object_truth(
    instances: Mapping, captions: Mapping, table: SynonymTable, image_ids: Iterable[int], *, source: str = "COCO"
) -> dict[int, frozenset[str]]:
    """Each image's truth: its instance categories ∪ the categories its reference captions mention (CHAIR).

    ``instances`` / ``captions`` are COCO annotation files (``images``, ``annotations``, ``categories``).
    An image listed in either file with no instances has whatever its captions give (possibly nothing).
    """
    wanted = set(image_ids)
    names = {}
    for cat in _field(instances, "categories", f"{source} instances"):
        name = str(_field(cat, "name", f"{source} categories"))
        names[_field(cat, "id", f"{source} categories")] = table.canonical(name)
    truth: dict[int, set[str]] = {}
    for data in (instances, captions):
        for image in data.get("images", []):
            if isinstance(image, Mapping) and image.get("id") in wanted:
                truth.setdefault(image["id"], set())
    for ann in _field(instances, "annotations", f"{source} instances"):
        image_id = _field(ann, "image_id", f"{source} instances")
        if image_id in wanted:
            category_id = _field(ann, "category_id", f"{source} instances")
            if category_id not in names:
                raise ValueError(f"{source} instances: category_id {category_id!r} is not among its categories")
            truth.setdefault(image_id, set()).add(names[category_id])
    for ann in _field(captions, "annotations", f"{source} captions"):
        image_id = _field(ann, "image_id", f"{source} captions")
        if image_id in wanted:
            truth.setdefault(image_id, set()).update(table.objects(str(_field(ann, "caption", f"{source} captions"))))
    missing = sorted(wanted - set(truth))
    if missing:
        raise ValueError(
            f"{source}: no instance or caption annotations for image ids {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; are these the right annotation files?"
        )
    return {i: frozenset(objs) for i, objs in truth.items()}


def load_object_halbench(root: str | Path, synonyms: str | Path | None = None) -> ObjectHalBench:
    """Load ShapeWorld's Object HalBench split: ``root``/{annotations/instances.json, annotations/captions.json,
    prompts.jsonl, images/}; the synonym list defaults to ``root``/synonyms.txt, else the one beside ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Object HalBench: directory {root} not found; generate it with generate_benchmarks")
    if synonyms is None:
        synonyms = root / "synonyms.txt" if (root / "synonyms.txt").is_file() else root.parent / "synonyms.txt"
    table = SynonymTable.from_file(synonyms)
    items = read_questions(root / "prompts.jsonl")
    instances = _read_json(root / "annotations" / "instances.json", "the COCO-format instances file")
    captions = _read_json(root / "annotations" / "captions.json", "the COCO-format captions file")
    truth = object_truth(instances, captions, table, [it.image_id for it in items], source=str(root / "annotations"))
    images = root / "images"
    return ObjectHalBench(tuple(items), truth, table, images if images.is_dir() else None)


def load_object_halbench_coco(
    questions: str | Path,
    coco_annotations: str | Path,
    synonyms: str | Path,
    *,
    image_dir: str | Path | None = None,
) -> ObjectHalBench:
    """Load the real benchmark: RLHF-V's prompt file, COCO's val2014 annotations and CHAIR's synonyms.txt.

    ``coco_annotations`` is the folder holding ``instances_val2014.json`` and ``captions_val2014.json``
    (CHAIR's layout; an ``annotations/`` subfolder, as COCO's zip unpacks, is also looked in).
    """
    # Not verifiable offline: this follows CHAIR's documented reader ({coco_path}/instances_val2014.json,
    # {coco_path}/captions_val2014.json). CHAIR also merges train2014, but the 300 images are all val2014.
    folder = Path(coco_annotations)
    if not (folder / "instances_val2014.json").is_file() and (folder / "annotations").is_dir():
        folder = folder / "annotations"
    table = SynonymTable.from_file(synonyms, coco_rules=True)
    items = read_questions(questions)
    zip_name = "from COCO's annotations_trainval2014.zip"
    instances = _read_json(folder / "instances_val2014.json", f"instances_val2014.json {zip_name}")
    captions = _read_json(folder / "captions_val2014.json", f"captions_val2014.json {zip_name}")
    truth = object_truth(instances, captions, table, [it.image_id for it in items], source=str(folder))
    return ObjectHalBench(tuple(items), truth, table, Path(image_dir) if image_dir is not None else None)


# --- LLM object extraction (the published numbers' setup) --------------------------------------

_EXTRACTION_INSTRUCTIONS = (
    "Read the image description below and list every physical object it says is in the image, one per line, "
    "as a short noun phrase in singular form. Leave out objects the description says are absent, and "
    "attributes, actions and places that are not objects. If there are none, answer NONE.\n\nDescription:\n"
)


def object_extraction_prompt(answer: str) -> str:
    """The prompt asking an LLM for the objects an answer claims are present (one per line)."""
    return _EXTRACTION_INSTRUCTIONS + answer.strip()


def parse_object_list(text: str) -> list[str]:
    """Object phrases from an LLM's one-per-line reply; bullets and numbering are stripped, NONE means none."""
    phrases = []
    for line in text.splitlines():
        phrase = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip(".").strip()
        if phrase and phrase.upper() != "NONE":
            phrases.append(phrase)
    return phrases


def llm_extractor(complete: Callable[[str], str]) -> Extractor:
    """An ``extract`` for ``chair_scores`` that asks ``complete`` (e.g. a cached judge call) for the objects."""
    return lambda answer: parse_object_list(complete(object_extraction_prompt(answer)))
