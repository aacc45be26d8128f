"""AMBER: generative CHAIR / Cover / Hal / Cog and discriminative yes/no precision, recall and F1.

Follows FACTS §5 and AMBER's data layout (``data/annotations.json``, ``data/relation.json``,
``data/safe_words.txt``, ``data/query/*.json``, ``image/AMBER_{id}.jpg``); ShapeWorld's AMBER split
is written in the same layout.

Generative, per answer: its nouns, kept only when they are AMBER object words (relation.json's keys
and their associated words) and not safe words. A kept noun that names a truth object (or a word
associated with one) covers it; any other kept noun is hallucinated, and when it names a ``hallu``
object (or an associated word) that object counts as "cognised". CHAIR = hallucinated / kept nouns;
Cover = covered truth objects / truth objects; Hal = answers with a hallucinated noun / answers;
Cog = mentioned hallu objects / hallu objects. Repeated nouns count each time (as the official
scorer does); an image's truth and hallu lists are de-duplicated.

Discriminative: an answer counts only when it starts with "yes" or "no" (case and punctuation aside);
"no" is the positive class. Precision = correct "no" / answered "no"; recall = correct "no" / truth
"no"; an unparseable answer is wrong and counted separately.

All metrics are fractions in [0, 1] (AMBER prints ×100); an empty denominator gives 0.

Noun extraction needs no tagger data: an object word counts as a noun unless its context makes it a
verb ("to watch", "they rock", "can" as a modal before a verb or adverb). The official scorer uses
NLTK's tagger and WordNet lemmas instead, so counts can differ slightly; pass ``extract`` to use any
other tagger or an LLM.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lemminflect import getAllLemmas

from mdpo_pipeline.core.eval.chair import expand_tokens, noun_forms, tokenize

#: answer text -> its nouns (an alternative tagger, or an LLM judge).
NounExtractor = Callable[[str], Sequence[str]]
#: (word, word) -> similarity in [-1, 1], e.g. cosine of word vectors.
Similarity = Callable[[str, str], float]

#: Annotation type -> the dimension AMBER reports it under.
DISCRIMINATIVE_TYPES: dict[str, str] = {
    "discriminative-hallucination": "existence",
    "discriminative-attribute-state": "attribute",
    "discriminative-attribute-number": "attribute",
    "discriminative-attribute-action": "attribute",
    "discriminative-relation": "relation",
}
DIMENSIONS: tuple[str, ...] = ("existence", "attribute", "relation")
OFFICIAL_SIMILARITY = 0.8  #: the official scorer's word-vector threshold
OFFICIAL_SPACY_MODEL = "en_core_web_lg"

_MODALS = frozenset({"can", "could", "will", "would", "may", "might", "must", "shall", "should"})
_SUBJECTS = frozenset({"i", "you", "we", "they", "he", "she", "it"})


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmberQuery:
    """One query: annotation id, image file name and prompt."""

    id: int
    image: str
    query: str


@dataclass(frozen=True)
class AmberData:
    """AMBER's annotations (``annotations[id - 1]``), queries, object vocabulary and safe words."""

    annotations: tuple[Mapping, ...]
    queries: tuple[AmberQuery, ...]
    association: Mapping[str, tuple[str, ...]]
    safe_words: frozenset[str]
    image_dir: Path | None = None

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every object word: relation.json's keys and the words associated with them."""
        return frozenset(self.association) | {w for ws in self.association.values() for w in ws}

    def annotation(self, item_id: int) -> Mapping:
        """The annotation of one id; KeyError for an id AMBER does not have."""
        if isinstance(item_id, bool) or not isinstance(item_id, int) or not 1 <= item_id <= len(self.annotations):
            raise KeyError(f"AMBER has no annotation id {item_id!r} (ids are 1..{len(self.annotations)})")
        return self.annotations[item_id - 1]

    def ids(self, kind: str) -> list[int]:
        """Annotation ids of one kind: "generative" or "discriminative"."""
        if kind not in ("generative", "discriminative"):
            raise ValueError(f"kind must be 'generative' or 'discriminative', got {kind!r}")
        return [a["id"] for a in self.annotations if (a["type"] == "generative") == (kind == "generative")]


def _fail(path: Path, problem: str) -> ValueError:
    return ValueError(f"AMBER: {path}: {problem}")


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"AMBER: {path} not found; supply {what} (AMBER's data/ folder layout)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None


def _check_annotations(rows: object, path: Path, association: Mapping[str, tuple[str, ...]]) -> tuple[Mapping, ...]:
    if not isinstance(rows, list) or not rows:
        raise _fail(path, "expected a non-empty JSON list of annotations")
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping) or not {"id", "type", "truth"} <= set(row):
            raise _fail(path, f"entry {index} needs id, type and truth: {str(row)[:120]}")
        # The official scorer reads annotations[id - 1]: ids must be 1..N in order.
        if row["id"] != index:
            raise _fail(path, f"entry {index} has id {row['id']!r}; ids must run 1..N in order")
        kind = row["type"]
        if kind == "generative":
            for key in ("truth", "hallu"):
                words = row.get(key)
                if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                    raise _fail(path, f"generative id {index}: {key!r} must be a list of object words")
                unknown = sorted({w.lower() for w in words} - set(association))
                if unknown:
                    raise _fail(path, f"generative id {index}: {key} words {unknown} are not keys of relation.json")
        elif kind in DISCRIMINATIVE_TYPES:
            if row["truth"] not in ("yes", "no"):
                raise _fail(path, f"id {index}: truth must be 'yes' or 'no', got {row['truth']!r}")
        else:
            known = ", ".join(("generative", *DISCRIMINATIVE_TYPES))
            raise _fail(path, f"id {index}: unknown type {kind!r} (known: {known})")
    return tuple(rows)


def _read_queries(folder: Path) -> list[AmberQuery]:
    names = ["query_all.json"] if (folder / "query_all.json").is_file() else [
        "query_generative.json", "query_discriminative.json",
    ]
    if not any((folder / n).is_file() for n in names):
        raise FileNotFoundError(
            f"AMBER: no query file in {folder}; supply query_all.json (or query_generative.json and "
            "query_discriminative.json)"
        )
    queries: list[AmberQuery] = []
    for name in names:
        path = folder / name
        if not path.is_file():
            continue
        rows = _load_json(path, "an AMBER query file")
        if not isinstance(rows, list):
            raise _fail(path, "expected a JSON list of {id, image, query}")
        for row in rows:
            if not isinstance(row, Mapping) or not {"id", "image", "query"} <= set(row):
                raise _fail(path, f"each query needs id, image and query: {str(row)[:120]}")
            queries.append(AmberQuery(int(row["id"]), str(row["image"]), str(row["query"])))
    return queries


def load_amber(root: str | Path) -> AmberData:
    """Load AMBER from its repository layout: ``root``/data/{annotations.json, relation.json, safe_words.txt,
    query/} and ``root``/image/ (``root`` may also be the data/ folder itself)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"AMBER: directory {root} not found; supply AMBER's repository folder (data/, image/)")
    data = root / "data" if (root / "data").is_dir() else root
    relation_path = data / "relation.json"
    relation = _load_json(relation_path, "relation.json, AMBER's object vocabulary")
    if not isinstance(relation, Mapping) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(w, str) for w in v) for k, v in relation.items()
    ):
        raise _fail(relation_path, "expected an object of word -> list of associated words")
    # Lower-cased: the official scorer compares raw tokens, so "TV" there only matched an upper-case "TV".
    association = {k.lower(): tuple(dict.fromkeys(w.lower() for w in v)) for k, v in relation.items()}
    safe_path = data / "safe_words.txt"
    if not safe_path.is_file():
        raise FileNotFoundError(f"AMBER: {safe_path} not found; supply safe_words.txt (one word per line)")
    safe = frozenset(w.strip().lower() for w in safe_path.read_text(encoding="utf-8").splitlines() if w.strip())
    ann_path = data / "annotations.json"
    annotations = _check_annotations(_load_json(ann_path, "annotations.json"), ann_path, association)
    queries = _read_queries(data / "query")
    unknown = sorted(q.id for q in queries if not 1 <= q.id <= len(annotations))
    if unknown:
        raise _fail(data / "query", f"query ids without an annotation: {unknown[:10]}")
    image_dir = root / "image" if (root / "image").is_dir() else data.parent / "image"
    return AmberData(annotations, tuple(queries), association, safe, image_dir if image_dir.is_dir() else None)


def _responses(responses: Mapping[int, str] | Iterable[Mapping]) -> dict[int, str]:
    """Responses keyed by id, from a mapping or from the official inference file's [{id, response}, ...]."""
    if isinstance(responses, Mapping):
        pairs = list(responses.items())
    else:
        pairs = []
        for row in responses:
            if not isinstance(row, Mapping) or "id" not in row or "response" not in row:
                raise ValueError(f"each response needs 'id' and 'response': {str(row)[:120]}")
            pairs.append((row["id"], row["response"]))
    out: dict[int, str] = {}
    for item_id, text in pairs:
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            raise TypeError(f"response ids must be integers, got {item_id!r}")
        if not isinstance(text, str):
            raise TypeError(f"response {item_id} must be a string, got {type(text).__name__}")
        if item_id in out:
            raise ValueError(f"response id {item_id} occurs twice")
        out[item_id] = text
    return out


# --- generative ---------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 14)
def _verb_or_adverb_next(word: str) -> bool:
    lemmas = getAllLemmas(word)
    base_verb = any(word in lemmas.get(pos, ()) for pos in ("VERB", "AUX"))
    return word == "not" or base_verb or "ADV" in lemmas


def _verb_reading(tokens: Sequence[str], i: int) -> bool:
    """True when context makes the object word at ``i`` a verb: after "to", "not", a modal, a negated
    auxiliary ("can't") or a subject pronoun, or "can" used as a modal (before "not", a bare verb or an adverb)."""
    prev = tokens[i - 1] if i else ""
    if prev in ("to", "not", "cannot") or prev.endswith("n't") or prev in _MODALS or prev in _SUBJECTS:
        return True
    return tokens[i] == "can" and i + 1 < len(tokens) and _verb_or_adverb_next(tokens[i + 1])


def _vocab_form(word: str, vocabulary: frozenset[str]) -> str | None:
    return next((f for f in noun_forms(word) if f in vocabulary), None)


def amber_nouns(text: str, vocabulary: Iterable[str]) -> list[str]:
    """Object-word nouns of ``text`` in order (as vocabulary words, repeats kept), without a tagger."""
    vocab = vocabulary if isinstance(vocabulary, frozenset) else frozenset(vocabulary)
    tokens = expand_tokens(tokenize(text), vocab.__contains__)
    nouns = []
    for i, tok in enumerate(tokens):
        word = _vocab_form(tok, vocab)
        if word is not None and not _verb_reading(tokens, i):
            nouns.append(word)
    return nouns


@lru_cache(maxsize=4)  # loading a large model takes seconds: once per process
def spacy_similarity(model: str = OFFICIAL_SPACY_MODEL) -> Similarity | None:
    """Word-vector similarity from an installed spaCy model that has vectors, else None (never downloads)."""
    try:
        import spacy
    except ImportError:
        return None
    if not spacy.util.is_package(model):
        return None
    nlp = spacy.load(model)
    if not nlp.vocab.vectors.shape or nlp.vocab.vectors.shape[0] == 0:  # small models ship no vectors
        return None

    @lru_cache(maxsize=1 << 14)
    def doc(word: str):
        return nlp(word)

    return lambda a, b: float(doc(a).similarity(doc(b)))


@dataclass(frozen=True)
class AmberAnswer:
    """One generative answer's detail."""

    id: int
    nouns: tuple[str, ...]  #: kept nouns (object words, safe words removed), repeats kept
    hallucinated: tuple[str, ...]  #: kept nouns naming no truth object
    covered: tuple[str, ...]  #: truth objects the answer names
    cognised: tuple[str, ...]  #: hallu objects the answer names
    rescued: tuple[str, ...]  #: nouns kept from hallucination by word-vector similarity
    truth: tuple[str, ...]
    hallu: tuple[str, ...]

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class AmberGenerativeResult:
    """AMBER's generative metrics with their counts."""

    chair: float
    cover: float
    hal: float
    cog: float
    n_answers: int
    n_nouns: int
    n_hallucinated_nouns: int
    n_hallucinated_answers: int
    n_truth: int
    n_covered: int
    n_hallu: int
    n_cognised: int
    vector_rescue: str  #: "off", "applied", or "unavailable: <why>"
    extractor: str  #: "rule" or "custom"
    per_answer: tuple[AmberAnswer, ...] = ()

    @property
    def vector_rescue_applied(self) -> bool:
        """Whether word-vector similarity rescued nouns in this run."""
        return self.vector_rescue == "applied"

    def as_dict(self, detail: bool = False) -> dict:
        """Metrics and counts (flat, for logging); ``detail`` adds the per-answer records."""
        out = {k: v for k, v in self.__dict__.items() if k != "per_answer"}
        out["vector_rescue_applied"] = self.vector_rescue_applied
        if detail:
            out["per_answer"] = [a.as_dict() for a in self.per_answer]
        return out


def _owner(noun: str, objects: Sequence[str], association: Mapping[str, tuple[str, ...]]) -> str | None:
    """The object ``noun`` names: an exact object first, else the first object it is associated with."""
    if noun in objects:
        return noun
    return next((o for o in objects if noun in association.get(o, ())), None)


def _similar_owner(noun: str, objects: Sequence[str], association: Mapping, similarity: Similarity, threshold: float):
    for obj in objects:
        if any(similarity(noun, w) > threshold for w in (obj, *association.get(obj, ()))):
            return obj
    return None


def amber_generative(
    responses: Mapping[int, str] | Iterable[Mapping],
    data: AmberData,
    *,
    extract: NounExtractor | None = None,
    vector_rescue: bool = False,
    similarity: Similarity | None = None,
    similarity_threshold: float = OFFICIAL_SIMILARITY,
    spacy_model: str = OFFICIAL_SPACY_MODEL,
    safe_words_in_denominator: bool = False,
) -> AmberGenerativeResult:
    """CHAIR, Cover, Hal and Cog of the generative responses (other ids are ignored).

    ``extract`` replaces rule-based noun extraction: it returns the answer's nouns (or noun phrases, each
    counted by its last word), kept when they are object words. ``vector_rescue`` adds the official scorer's step:
    a noun naming no truth object still counts as covering one when its word-vector similarity to it
    (or an associated word) exceeds ``similarity_threshold``; it uses ``similarity`` if given, else an
    installed spaCy ``spacy_model`` with vectors, and is reported unavailable otherwise.
    ``safe_words_in_denominator`` reproduces the official scorer, whose CHAIR denominator keeps safe words.
    """
    answers = _responses(responses)
    for item_id in answers:
        data.annotation(item_id)
    rescue_status = "off"
    if vector_rescue:
        similarity = similarity if similarity is not None else spacy_similarity(spacy_model)
        missing = f"unavailable: no spaCy model {spacy_model!r} with vectors"
        rescue_status = "applied" if similarity is not None else missing
    use_rescue = rescue_status == "applied"
    vocab = data.vocabulary
    per_answer = []
    n_nouns = 0
    for item_id in sorted(answers):
        ann = data.annotation(item_id)
        if ann["type"] != "generative":
            continue
        text = answers[item_id]
        if extract is None:
            nouns = amber_nouns(text, vocab)
        else:
            found = extract(text)
            if isinstance(found, str) or not all(isinstance(n, str) for n in found):
                raise TypeError(f"extract must return a list of strings, got {found!r}")
            nouns = [w for n in found for tok in tokenize(n)[-1:] if (w := _vocab_form(tok, vocab))]
        truth = list(dict.fromkeys(w.lower() for w in ann["truth"]))
        hallu = list(dict.fromkeys(w.lower() for w in ann["hallu"]))
        kept = [n for n in nouns if n not in data.safe_words]
        n_nouns += len(nouns) if safe_words_in_denominator else len(kept)
        covered: set[str] = set()
        cognised: set[str] = set()
        hallucinated: list[str] = []
        rescued: list[str] = []
        for noun in kept:
            owner = _owner(noun, truth, data.association)
            if owner is not None:
                covered.add(owner)
                continue
            named = _owner(noun, hallu, data.association)
            if named is None and use_rescue:
                named = _similar_owner(noun, hallu, data.association, similarity, similarity_threshold)
            if named is not None:
                cognised.add(named)
            if use_rescue:
                owner = _similar_owner(noun, truth, data.association, similarity, similarity_threshold)
                if owner is not None:
                    covered.add(owner)
                    rescued.append(noun)
                    continue
            hallucinated.append(noun)
        per_answer.append(
            AmberAnswer(
                id=item_id,
                nouns=tuple(kept),
                hallucinated=tuple(hallucinated),
                covered=tuple(t for t in truth if t in covered),
                cognised=tuple(h for h in hallu if h in cognised),
                rescued=tuple(rescued),
                truth=tuple(truth),
                hallu=tuple(hallu),
            )
        )
    n_halluc = sum(len(a.hallucinated) for a in per_answer)
    n_bad = sum(bool(a.hallucinated) for a in per_answer)
    n_truth = sum(len(a.truth) for a in per_answer)
    n_covered = sum(len(a.covered) for a in per_answer)
    n_hallu = sum(len(a.hallu) for a in per_answer)
    n_cog = sum(len(a.cognised) for a in per_answer)
    return AmberGenerativeResult(
        chair=_ratio(n_halluc, n_nouns),
        cover=_ratio(n_covered, n_truth),
        hal=_ratio(n_bad, len(per_answer)),
        cog=_ratio(n_cog, n_hallu),
        n_answers=len(per_answer),
        n_nouns=n_nouns,
        n_hallucinated_nouns=n_halluc,
        n_hallucinated_answers=n_bad,
        n_truth=n_truth,
        n_covered=n_covered,
        n_hallu=n_hallu,
        n_cognised=n_cog,
        vector_rescue=rescue_status,
        extractor="rule" if extract is None else "custom",
        per_answer=tuple(per_answer),
    )


# --- discriminative -----------------------------------------------------------------------------

_YES_NO = re.compile(r"^[^a-z0-9]*(yes|no)\b")


def parse_yes_no(text: str) -> str | None:
    """"yes" or "no" when the answer starts with that word (case, quotes and punctuation aside), else None."""
    m = _YES_NO.match(text.strip().lower())
    return m.group(1) if m else None


@dataclass(frozen=True)
class YesNoScores:
    """Yes/no counts of a set of items, "no" being the positive class, and the metrics they give."""

    n: int
    n_correct: int
    n_truth_no: int  #: items whose truth is "no" (positives)
    n_answer_no: int  #: items answered "no"
    n_true_no: int  #: answered "no" and truth "no"
    n_unparseable: int

    @property
    def accuracy(self) -> float:
        """Correct answers / items (unparseable answers are wrong)."""
        return _ratio(self.n_correct, self.n)

    @property
    def precision(self) -> float:
        """Correct "no" / answered "no"."""
        return _ratio(self.n_true_no, self.n_answer_no)

    @property
    def recall(self) -> float:
        """Correct "no" / truth "no"."""
        return _ratio(self.n_true_no, self.n_truth_no)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        """Counts and metrics."""
        return {**self.__dict__, "accuracy": self.accuracy, "precision": self.precision, "recall": self.recall,
                "f1": self.f1}


def _yes_no(pairs: Sequence[tuple[str, str | None]]) -> YesNoScores:
    return YesNoScores(
        n=len(pairs),
        n_correct=sum(t == a for t, a in pairs),
        n_truth_no=sum(t == "no" for t, _ in pairs),
        n_answer_no=sum(a == "no" for _, a in pairs),
        n_true_no=sum(t == a == "no" for t, a in pairs),
        n_unparseable=sum(a is None for _, a in pairs),
    )


@dataclass(frozen=True)
class AmberDiscriminativeResult:
    """Yes/no metrics overall, per dimension (existence, attribute, relation) and per annotation type."""

    overall: YesNoScores
    by_dimension: Mapping[str, YesNoScores]
    by_type: Mapping[str, YesNoScores]
    unparseable_ids: tuple[int, ...]

    @property
    def f1(self) -> float:
        """Overall F1 ("no" positive)."""
        return self.overall.f1

    def as_dict(self, detail: bool = False) -> dict:
        """Flat metrics for logging: overall ones bare, per dimension prefixed ("existence_f1")."""
        out = self.overall.as_dict()
        for dim, scores in self.by_dimension.items():
            out |= {f"{dim}_{k}": v for k, v in scores.as_dict().items()}
        if detail:
            out["by_type"] = {t: s.as_dict() for t, s in self.by_type.items()}
            out["unparseable_ids"] = list(self.unparseable_ids)
        return out


def amber_discriminative(
    responses: Mapping[int, str] | Iterable[Mapping], data: AmberData
) -> AmberDiscriminativeResult:
    """Precision, recall, F1 and accuracy of the yes/no responses (other ids are ignored)."""
    answers = _responses(responses)
    rows: list[tuple[str, str, str | None]] = []
    unparseable = []
    for item_id in sorted(answers):
        ann = data.annotation(item_id)
        if ann["type"] == "generative":
            continue
        answer = parse_yes_no(answers[item_id])
        if answer is None:
            unparseable.append(item_id)
        rows.append((ann["type"], ann["truth"], answer))
    by_dim = {
        dim: _yes_no([(t, a) for typ, t, a in rows if DISCRIMINATIVE_TYPES[typ] == dim])
        for dim in DIMENSIONS
        if any(DISCRIMINATIVE_TYPES[typ] == dim for typ, _, _ in rows)
    }
    by_type = {typ: _yes_no([(t, a) for ty, t, a in rows if ty == typ]) for typ in sorted({r[0] for r in rows})}
    return AmberDiscriminativeResult(_yes_no([(t, a) for _, t, a in rows]), by_dim, by_type, tuple(unparseable))


@dataclass(frozen=True)
class AmberResult:
    """Both AMBER tasks; a task with no responses is None."""

    generative: AmberGenerativeResult | None
    discriminative: AmberDiscriminativeResult | None

    def as_dict(self, detail: bool = False) -> dict:
        """Flat metrics, generative ones prefixed "generative_", yes/no ones "discriminative_"."""
        out: dict = {}
        for name in ("generative", "discriminative"):
            part = getattr(self, name)
            if part is not None:
                out |= {f"{name}_{k}": v for k, v in part.as_dict(detail).items()}
        return out


def amber_scores(
    responses: Mapping[int, str] | Iterable[Mapping], data: AmberData, **generative_options
) -> AmberResult:
    """Score a mixed response set: generative ids as ``amber_generative``, yes/no ids as ``amber_discriminative``."""
    answers = _responses(responses)
    for item_id in answers:
        data.annotation(item_id)
    gen = {i: t for i, t in answers.items() if data.annotation(i)["type"] == "generative"}
    dis = {i: t for i, t in answers.items() if i not in gen}
    return AmberResult(
        amber_generative(gen, data, **generative_options) if gen else None,
        amber_discriminative(dis, data) if dis else None,
    )
