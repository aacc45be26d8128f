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

Two scoring modes (``mode=``):

- ``offline`` (default; the ShapeWorld split): the rules above. Noun extraction needs no tagger data: an
  object word counts as a noun unless its context makes it a verb ("to watch", "they rock", "can" as a
  modal before a verb or adverb). Pass ``extract`` to use any other tagger or an LLM.
- ``official``: junyangwang0410/AMBER ``inference.py`` reproduced exactly, aggregate and per item: NLTK
  ``word_tokenize`` + ``pos_tag`` + ``WordNetLemmatizer`` nouns (case-sensitive, NLTK data found through
  ``NLTK_DATA`` / ``nltk.data.path``), safe words in the CHAIR denominator, a repeated truth/hallu object
  counted per position, answers scored only when exactly "Yes"/"No", the 689 ``relation`` items under
  Relation, and the printed ×100 values with its +0.001 denominators and F1 from rounded P/R (``official``
  dict of each result). The word-vector rescue (spaCy similarity > 0.8) is applied when a spaCy model
  with vectors loads, and reported either way.
"""

from __future__ import annotations

import json
import re
import warnings
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
    # AMBER's release has 689 yes/no items of type "relation" (all truth "no"); the official scorer's
    # fall-through branch counts them under Relation.
    "relation": "relation",
}
DIMENSIONS: tuple[str, ...] = ("existence", "attribute", "relation")
MODES: tuple[str, ...] = ("offline", "official")
OFFICIAL_SIMILARITY = 0.8  #: the official scorer's word-vector threshold
OFFICIAL_SPACY_MODEL = "en_core_web_lg"
AMBER_SOURCE = "https://github.com/junyangwang0410/AMBER"
NLTK_INSTALL = "python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet"

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
    #: where the images belong; checked only when asked for (``image_dir``, ``image_path``), so that scoring
    #: works from data/ alone
    image_root: Path | None = None
    #: relation.json as written (case, order and repeats kept) and safe_words.txt lines as the official scorer
    #: reads them; ``official`` mode needs both (``load_amber`` fills them)
    relation: Mapping[str, tuple[str, ...]] | None = None
    official_safe_words: tuple[str, ...] | None = None

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every object word: relation.json's keys and the words associated with them."""
        return frozenset(self.association) | {w for ws in self.association.values() for w in ws}

    @property
    def has_images(self) -> bool:
        """Whether the image folder exists."""
        return self.image_root is not None and self.image_root.is_dir()

    @property
    def image_dir(self) -> Path:
        """The image folder; FileNotFoundError naming it (and where AMBER's images come from) when absent."""
        if self.image_root is None:
            raise FileNotFoundError(f"AMBER: no image folder known; {_IMAGES_HINT}")
        if not self.image_root.is_dir():
            raise FileNotFoundError(f"AMBER: image folder {self.image_root} not found; {_IMAGES_HINT}")
        return self.image_root

    def image_path(self, query: AmberQuery | int) -> Path:
        """The image file of a query (or annotation id); FileNotFoundError when it is missing."""
        if not isinstance(query, AmberQuery):
            found = [q for q in self.queries if q.id == query]
            if not found:
                raise KeyError(f"AMBER has no query with id {query!r}")
            query = found[0]
        path = self.image_dir / query.image
        if not path.is_file():
            raise FileNotFoundError(f"AMBER: image {path} not found (query {query.id}); {_IMAGES_HINT}")
        return path

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


_DATA_HINT = f"it comes with AMBER's release ({AMBER_SOURCE}, folder data/)"
_IMAGES_HINT = (
    f"AMBER's images are not in its git tree: download the image archive linked from {AMBER_SOURCE} (README) "
    "and unzip it so that image/AMBER_1.jpg sits next to data/ (scoring alone does not need them)"
)


def _fail(path: Path, problem: str) -> ValueError:
    return ValueError(f"AMBER: {path}: {problem}")


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"AMBER: {path} not found; supply {what}: {_DATA_HINT}")
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
            f"query_discriminative.json): {_DATA_HINT}"
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


def load_amber(root: str | Path, *, image_dir: str | Path | None = None, require_images: bool = False) -> AmberData:
    """Load AMBER from its repository layout: ``root``/data/{annotations.json, relation.json, safe_words.txt,
    query/} and ``root``/image/ (``root`` may also be the data/ folder itself).

    The image folder (``image_dir`` overrides where) is checked only when ``require_images`` is set or when
    ``AmberData.image_dir`` / ``image_path`` is used, so scoring needs data/ alone."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"AMBER: directory {root} not found; supply AMBER's repository folder (data/, image/) from {AMBER_SOURCE}"
        )
    data = root / "data" if (root / "data").is_dir() else root
    if data is root and not any((root / n).exists() for n in ("relation.json", "annotations.json", "query")):
        raise FileNotFoundError(f"AMBER: {root / 'data'} not found; {_DATA_HINT}")
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
        raise FileNotFoundError(
            f"AMBER: {safe_path} not found; supply safe_words.txt (one word per line): {_DATA_HINT}"
        )
    safe = frozenset(w.strip().lower() for w in safe_path.read_text(encoding="utf-8").splitlines() if w.strip())
    with safe_path.open(encoding="utf-8") as lines:  # exactly as inference.py reads it
        official_safe = tuple(line.split("\n")[0] for line in lines)
    ann_path = data / "annotations.json"
    annotations = _check_annotations(_load_json(ann_path, "annotations.json"), ann_path, association)
    queries = _read_queries(data / "query")
    unknown = sorted(q.id for q in queries if not 1 <= q.id <= len(annotations))
    if unknown:
        raise _fail(data / "query", f"query ids without an annotation: {unknown[:10]}")
    if image_dir is not None:
        images = Path(image_dir)
    else:
        images = root / "image" if (root / "image").is_dir() else data.parent / "image"
    amber = AmberData(
        annotations, tuple(queries), association, safe, images,
        relation={k: tuple(v) for k, v in relation.items()}, official_safe_words=official_safe,
    )
    if require_images:
        amber.image_dir  # noqa: B018 -- raises with the folder's name and source when it is missing
    return amber


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
def _spacy_vectors(model: str) -> tuple[Similarity | None, str]:
    """(similarity, "") from an installed spaCy model with word vectors, else (None, why); never downloads."""
    try:
        import spacy
    except ImportError:
        return None, f"spaCy is not installed (pip install spacy && python -m spacy download {model})"
    try:
        nlp = spacy.load(model)
    except (OSError, ImportError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"spaCy model {model!r} does not load ({first[:200]})"
    shape = nlp.vocab.vectors.shape
    if not shape or shape[0] == 0 or (len(shape) > 1 and shape[1] == 0):  # small models ship no vectors
        return None, f"spaCy model {model!r} has no word vectors"

    @lru_cache(maxsize=1 << 14)
    def doc(word: str):
        return nlp(word)

    # Doc.similarity of whole-pipeline docs, as inference.py's check_synonyms_word computes it.
    def similarity(a: str, b: str) -> float:
        return float(doc(a).similarity(doc(b)))

    return similarity, ""


def spacy_similarity(model: str = OFFICIAL_SPACY_MODEL) -> Similarity | None:
    """Word-vector similarity from an installed spaCy model that has vectors, else None (never downloads)."""
    return _spacy_vectors(model)[0]


def _rescue(
    vector_rescue: bool, similarity: Similarity | None, spacy_model: str
) -> tuple[Similarity | None, str, str]:
    """(similarity or None, ``vector_rescue`` status, ``similarity_rescue`` status) of one scoring run."""
    if not vector_rescue:
        return None, "off", "not applied: off (vector_rescue=False)"
    if similarity is not None:
        return similarity, "applied", f"applied ({getattr(similarity, '__name__', 'custom similarity')})"
    found, why = _spacy_vectors(spacy_model)
    if found is None:
        return None, f"unavailable: {why}", f"not applied: {why}"
    return found, "applied", f"applied ({spacy_model})"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"AMBER scoring mode must be one of {MODES}, got {mode!r}")


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
class AmberOfficialAnswer:
    """One generative answer as the official scorer sees it (field names as in the conformance fixtures)."""

    id: int
    tokens: tuple[str, ...]  #: nltk.word_tokenize
    tags: tuple[str, ...]  #: nltk.pos_tag
    nouns: tuple[str, ...]  #: lemmas of the NN* tokens
    vocab_nouns: tuple[str, ...]  #: those that are relation.json words (case-sensitive), repeats kept
    vocab_noun_status: tuple[str, ...]  #: per vocab noun: truth | safe_word | rescued | hallucinated
    hallucinated_nouns: tuple[str, ...]
    rescued_nouns: tuple[str, ...]  #: kept from hallucination by word-vector similarity
    truth: tuple[str, ...]
    truth_covered: tuple[int, ...]  #: 0/1 per truth position
    covered_truth: tuple[str, ...]
    hallu: tuple[str, ...]
    hallu_covered: tuple[int, ...]  #: 0/1 per hallu position
    mentioned_hallu: tuple[str, ...]
    counts: Mapping[str, int]  #: this answer's increments of the official counters
    hallucination_free: bool

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
                for k, v in self.__dict__.items()}


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
    extractor: str  #: "rule", "custom" or "nltk" (official)
    per_answer: tuple[AmberAnswer | AmberOfficialAnswer, ...] = ()
    mode: str = "offline"
    similarity_rescue: str = ""  #: "applied (<model>)" or "not applied: <why>"
    #: official mode: what inference.py prints (CHAIR, Cover, Hal, Cog: ×100, 1 decimal) and its counters
    official: Mapping | None = None

    @property
    def vector_rescue_applied(self) -> bool:
        """Whether word-vector similarity rescued nouns in this run."""
        return self.vector_rescue == "applied"

    def as_dict(self, detail: bool = False) -> dict:
        """Metrics and counts (flat, for logging); ``detail`` adds the per-answer records."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("per_answer", "official")}
        out["vector_rescue_applied"] = self.vector_rescue_applied
        if self.official is not None:
            out["official"] = self.official
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


# --- official mode: NLTK ------------------------------------------------------------------------

#: (downloader package, resource nltk looks up) of what inference.py's extract_nouns needs with nltk >= 3.9
_NLTK_RESOURCES: tuple[tuple[str, str], ...] = (
    ("punkt_tab", "tokenizers/punkt_tab/english/"),
    ("averaged_perceptron_tagger_eng", "taggers/averaged_perceptron_tagger_eng/"),
    ("wordnet", "corpora/wordnet/"),
)


class NLTKDataMissing(LookupError):
    """The NLTK data official mode needs is not installed (or NLTK refuses to read it)."""


@dataclass(frozen=True)
class _NLTK:
    tokenize: Callable[[str], list[str]]
    tag: Callable[[list[str]], list[tuple[str, str]]]
    lemmatize: Callable[[str], str]


def _nltk_error(missing: Sequence[str], refusals: Sequence[str], cause: str = "") -> NLTKDataMissing:
    import nltk

    lines = [
        f"AMBER official mode needs NLTK data it cannot find or may not read: {', '.join(missing)}.",
        f"Install it with `{NLTK_INSTALL}` or set NLTK_DATA to a folder holding it "
        f"(searched: {', '.join(map(str, nltk.data.path))}).",
    ]
    if refusals:
        lines.append("NLTK refused folders writable by group/others (make them chmod go-w): " + " | ".join(refusals))
    if cause:
        lines.append(cause)
    return NLTKDataMissing("\n".join(lines))


@lru_cache(maxsize=1)  # the tagger and WordNet take seconds to load: once per process
def _nltk_tools() -> _NLTK:
    """NLTK's tokenizer, tagger and lemmatizer as inference.py calls them, data checked up front."""
    import nltk
    from nltk.stem import WordNetLemmatizer
    from nltk.tag.perceptron import PerceptronTagger

    missing = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for package, resource in _NLTK_RESOURCES:
            try:
                nltk.data.find(resource)
            except LookupError:
                missing.append(package)
    refusals = [str(w.message) for w in caught if "will not read" in str(w.message)]
    if missing:
        raise _nltk_error(missing, refusals)
    try:
        # nltk.pos_tag builds a PerceptronTagger (reading its weights) on every call: build it once instead;
        # .tag() is what pos_tag runs.
        tagger = PerceptronTagger()
        lemmatizer = WordNetLemmatizer()
        lemmatizer.lemmatize("dogs")  # loads WordNet now rather than inside the scoring loop
        nltk.word_tokenize("Load punkt.")
    except (LookupError, PermissionError) as exc:
        raise _nltk_error([p for p, _ in _NLTK_RESOURCES], refusals, f"NLTK said: {exc}") from None
    return _NLTK(nltk.word_tokenize, tagger.tag, lemmatizer.lemmatize)


# --- official mode: generative ------------------------------------------------------------------

#: metrics.txt's starting values: every denominator starts at 0.001
_GENERATIVE_COUNTERS = ("chair_score", "chair_num", "safe_cover_score", "safe_cover_num", "hallu_cover_score",
                        "hallu_cover_num", "non_hallu_score", "non_hallu_num")


def _official_start(names: Iterable[str]) -> dict[str, float]:
    return {k: 0.001 if k.endswith("_num") else 0 for k in names}


def _mark(slots: list[int], j: int, n_objects: int) -> None:
    """inference.py's marking: position j of the word list is an association of object ``slots[j]`` (mark that
    object) or, past the associations, an object itself (mark it)."""
    offset = len(slots) - n_objects
    if j < offset:
        slots[slots[j] + offset] = 1
    else:
        slots[j] = 1


def _official_item(
    item_id: int,
    tagged: Sequence[tuple[str, str]],
    nouns: Sequence[str],
    ann: Mapping,
    relation: Mapping[str, Sequence[str]],
    vocabulary: frozenset[str],
    safe_words: frozenset[str],
    similar: Callable[[str, str], bool] | None,
) -> AmberOfficialAnswer:
    vocab_nouns = [n for n in nouns if n in vocabulary]
    truth, hallu = list(ann["truth"]), list(ann["hallu"])
    # Word lists and slots laid out as inference.py does: associations (slot = owning object's index), then the
    # objects themselves (slot = 0/1 flag).
    truth_words = [w for t in truth for w in relation[t]] + truth
    truth_slots = [i for i, t in enumerate(truth) for _ in relation[t]] + [0] * len(truth)
    hallu_words = [w for h in hallu for w in relation[h]] + hallu
    hallu_slots = [i for i, h in enumerate(hallu) for _ in relation[h]] + [0] * len(hallu)
    flags = [0] * len(vocab_nouns)
    status = []
    rescued = []
    for idx, noun in enumerate(vocab_nouns):
        if noun in safe_words:
            status.append("safe_word")
            continue
        if noun in truth_words:
            _mark(truth_slots, truth_words.index(noun), len(truth))
            status.append("truth")
            continue
        if noun in hallu_words:
            _mark(hallu_slots, hallu_words.index(noun), len(hallu))
        if similar is not None:
            # Same place and order as check_synonyms_word's two loops: first similar hallu word, then truth word.
            j = next((j for j, w in enumerate(hallu_words) if similar(noun, w)), None)
            if j is not None:
                _mark(hallu_slots, j, len(hallu))
            j = next((j for j, w in enumerate(truth_words) if similar(noun, w)), None)
            if j is not None:
                _mark(truth_slots, j, len(truth))
                status.append("rescued")
                rescued.append(noun)
                continue
        flags[idx] = 1
        status.append("hallucinated")
    # Sliced as inference.py does: with no objects, [-0:] is the whole list, which is then empty too.
    truth_flags = truth_slots[-len(truth):]
    hallu_flags = hallu_slots[-len(hallu):]
    counts = {
        "chair_score": sum(flags), "chair_num": len(flags),
        "safe_cover_score": sum(truth_flags), "safe_cover_num": len(truth_flags),
        "hallu_cover_score": sum(hallu_flags), "hallu_cover_num": len(hallu_flags),
        "non_hallu_score": int(sum(flags) == 0), "non_hallu_num": 1,
    }
    return AmberOfficialAnswer(
        id=item_id,
        tokens=tuple(w for w, _ in tagged),
        tags=tuple(t for _, t in tagged),
        nouns=tuple(nouns),
        vocab_nouns=tuple(vocab_nouns),
        vocab_noun_status=tuple(status),
        hallucinated_nouns=tuple(n for n, f in zip(vocab_nouns, flags) if f),
        rescued_nouns=tuple(rescued),
        truth=tuple(truth),
        truth_covered=tuple(truth_flags),
        covered_truth=tuple(t for t, f in zip(truth, truth_flags) if f),
        hallu=tuple(hallu),
        hallu_covered=tuple(hallu_flags),
        mentioned_hallu=tuple(h for h, f in zip(hallu, hallu_flags) if f),
        counts=counts,
        hallucination_free=sum(flags) == 0,
    )


def _official_relation(data: AmberData) -> tuple[Mapping[str, tuple[str, ...]], tuple[str, ...]]:
    if data.relation is None or data.official_safe_words is None:
        raise ValueError("AMBER official mode needs relation.json and safe_words.txt as written: load with load_amber")
    return data.relation, data.official_safe_words


def _official_generative(
    answers: Mapping[int, str], data: AmberData, similarity: Similarity | None, threshold: float
) -> tuple[list[AmberOfficialAnswer], dict]:
    relation, safe_lines = _official_relation(data)
    vocabulary = frozenset(relation) | {w for ws in relation.values() for w in ws}
    items = [(i, t, data.annotation(i)) for i, t in answers.items() if data.annotation(i)["type"] == "generative"]
    for item_id, _, ann in items:
        unknown = [w for w in (*ann["truth"], *ann["hallu"]) if w not in relation]
        if unknown:  # inference.py would stop with a KeyError here
            raise ValueError(f"AMBER official mode: id {item_id}: {unknown} are not keys of relation.json (as written)")
    similar = None
    if similarity is not None:
        cache: dict[tuple[str, str], bool] = {}

        def similar(a: str, b: str) -> bool:
            if (a, b) not in cache:
                cache[(a, b)] = similarity(a, b) > threshold
            return cache[(a, b)]

    tools = _nltk_tools() if items else None
    parsed: dict[str, tuple[list[tuple[str, str]], list[str]]] = {}  # repeated answers are tagged once
    metrics = _official_start(_GENERATIVE_COUNTERS)
    per_answer = []
    safe = frozenset(safe_lines)
    for item_id, text, ann in items:  # in the given order, as the official loop (its float sums depend on it)
        if text not in parsed:
            tagged = tools.tag(tools.tokenize(text))
            parsed[text] = (tagged, [tools.lemmatize(w) for w, pos in tagged if pos.startswith("NN")])
        item = _official_item(item_id, *parsed[text], ann, relation, vocabulary, safe, similar)
        for key, value in item.counts.items():
            metrics[key] += value
        per_answer.append(item)
    m = metrics
    official = {
        "CHAIR": round(m["chair_score"] / m["chair_num"] * 100, 1),
        "Cover": round(m["safe_cover_score"] / m["safe_cover_num"] * 100, 1),
        "Hal": round(100 - m["non_hallu_score"] / m["non_hallu_num"] * 100, 1),
        "Cog": round(m["hallu_cover_score"] / m["hallu_cover_num"] * 100, 1),
        "counts": {k: sum(a.counts[k] for a in per_answer) for k in _GENERATIVE_COUNTERS},
    }
    return per_answer, official


def amber_generative(
    responses: Mapping[int, str] | Iterable[Mapping],
    data: AmberData,
    *,
    mode: str = "offline",
    extract: NounExtractor | None = None,
    vector_rescue: bool | None = None,
    similarity: Similarity | None = None,
    similarity_threshold: float = OFFICIAL_SIMILARITY,
    spacy_model: str = OFFICIAL_SPACY_MODEL,
    safe_words_in_denominator: bool = False,
) -> AmberGenerativeResult:
    """CHAIR, Cover, Hal and Cog of the generative responses (other ids are ignored).

    ``mode="offline"``: ``extract`` replaces rule-based noun extraction: it returns the answer's nouns (or noun
    phrases, each counted by its last word), kept when they are object words. ``vector_rescue`` (off by default)
    adds the official scorer's step: a noun naming no truth object still counts as covering one when its
    word-vector similarity to it (or an associated word) exceeds ``similarity_threshold``; it uses ``similarity``
    if given, else an installed spaCy ``spacy_model`` with vectors, and is reported unavailable otherwise.
    ``safe_words_in_denominator`` reproduces the official scorer, whose CHAIR denominator keeps safe words.

    ``mode="official"``: inference.py exactly (NLTK data needed; ``NLTKDataMissing`` says how to install it);
    answers are scored in the given order. ``vector_rescue`` defaults to on there: applied when ``similarity``
    is given or ``spacy_model`` loads with vectors, else reported "not applied: <why>". ``extract`` and
    ``safe_words_in_denominator`` do not apply.
    """
    _check_mode(mode)
    answers = _responses(responses)
    for item_id in answers:
        data.annotation(item_id)
    if mode == "official":
        if extract is not None or safe_words_in_denominator:
            raise ValueError("AMBER official mode uses NLTK nouns and keeps safe words in CHAIR's denominator: "
                             "extract and safe_words_in_denominator apply to offline mode only")
        similarity, rescue_status, similarity_status = _rescue(
            vector_rescue is not False, similarity, spacy_model
        )
        per_answer, official = _official_generative(answers, data, similarity, similarity_threshold)
        c = official["counts"]
        n = len(per_answer)
        return AmberGenerativeResult(
            chair=_ratio(c["chair_score"], c["chair_num"]),
            cover=_ratio(c["safe_cover_score"], c["safe_cover_num"]),
            hal=_ratio(n - c["non_hallu_score"], n),
            cog=_ratio(c["hallu_cover_score"], c["hallu_cover_num"]),
            n_answers=n,
            n_nouns=c["chair_num"],
            n_hallucinated_nouns=c["chair_score"],
            n_hallucinated_answers=n - c["non_hallu_score"],
            n_truth=c["safe_cover_num"],
            n_covered=c["safe_cover_score"],
            n_hallu=c["hallu_cover_num"],
            n_cognised=c["hallu_cover_score"],
            vector_rescue=rescue_status,
            extractor="nltk",
            per_answer=tuple(per_answer),
            mode="official",
            similarity_rescue=similarity_status,
            official=official,
        )
    similarity, rescue_status, similarity_status = _rescue(bool(vector_rescue), similarity, spacy_model)
    use_rescue = similarity is not None
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
        similarity_rescue=similarity_status,
    )


# --- discriminative -----------------------------------------------------------------------------

_YES_NO = re.compile(r"^[^a-z0-9]*(yes|no)\b")
#: inference.py compares the raw response: nothing else is an answer (no stripping, no case folding)
_OFFICIAL_YES_NO = {"Yes": "yes", "No": "no"}


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
class AmberOfficialYesNo:
    """One yes/no answer as the official scorer counts it."""

    id: int
    type: str
    truth: str
    response: str
    correct: int  #: 1 when exactly "Yes" for truth yes or exactly "No" for truth no
    answer_is_no: int  #: 1 when exactly "No"
    counters: Mapping[str, int]  #: this answer's increments of the official counters

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {**self.__dict__, "counters": dict(self.counters)}


@dataclass(frozen=True)
class AmberDiscriminativeResult:
    """Yes/no metrics overall, per dimension (existence, attribute, relation) and per annotation type."""

    overall: YesNoScores
    by_dimension: Mapping[str, YesNoScores]
    by_type: Mapping[str, YesNoScores]
    unparseable_ids: tuple[int, ...]
    mode: str = "offline"
    #: official mode: what inference.py prints (Accuracy, Precision, Recall, F1: ×100, 1 decimal) overall and per
    #: existence / attribute / state / number / action / relation, and its counters
    official: Mapping | None = None
    per_item: tuple[AmberOfficialYesNo, ...] = ()  #: official mode only

    @property
    def f1(self) -> float:
        """Overall F1 ("no" positive)."""
        return self.overall.f1

    def as_dict(self, detail: bool = False) -> dict:
        """Flat metrics for logging: overall ones bare, per dimension prefixed ("existence_f1")."""
        out = self.overall.as_dict()
        for dim, scores in self.by_dimension.items():
            out |= {f"{dim}_{k}": v for k, v in scores.as_dict().items()}
        out["mode"] = self.mode
        if self.official is not None:
            out["official"] = self.official
        if detail:
            out["by_type"] = {t: s.as_dict() for t, s in self.by_type.items()}
            out["unparseable_ids"] = list(self.unparseable_ids)
            if self.per_item:
                out["per_item"] = [p.as_dict() for p in self.per_item]
        return out


#: the official counters' prefix per type; any other type (discriminative-relation, relation) is "asso"
_TYPE_PREFIX = {
    "discriminative-attribute-state": "as_",
    "discriminative-attribute-number": "an_",
    "discriminative-attribute-action": "aa_",
    "discriminative-hallucination": "ha_",
}
_DISCRIMINATIVE_COUNTERS = tuple(
    f"{prefix}qa_{name}"
    for prefix in ("", "as_", "an_", "aa_", "asso_", "ha_")
    for name in ("correct_score", "correct_num", "no_score", "no_num", "ans_no_score", "ans_no_num")
)


def _official_prf(correct: float, n: float, ans_no_true: float, ans_no: float, true_no: float, truth_no: float,
                  f1_eps: float = 0.0001) -> dict[str, float]:
    """inference.py's four printed numbers, same float operations: F1 from the rounded P and R."""
    accuracy = round(correct / n * 100, 1)
    precision = round(ans_no_true / ans_no * 100, 1)
    recall = round(true_no / truth_no * 100, 1)
    f1 = round(2 * (precision / 100) * (recall / 100) / ((precision / 100) + (recall / 100) + f1_eps) * 100, 1)
    return {"Accuracy": accuracy, "Precision": precision, "Recall": recall, "F1": f1}


def _official_discriminative(answers: Mapping[int, str], data: AmberData) -> tuple[list[AmberOfficialYesNo], dict]:
    m = _official_start(_DISCRIMINATIVE_COUNTERS)
    per_item = []
    for item_id, response in answers.items():  # given order, as the official loop
        ann = data.annotation(item_id)
        if ann["type"] == "generative":
            continue
        prefix = _TYPE_PREFIX.get(ann["type"], "asso_")
        counters: dict[str, int] = {}

        def bump(*names: str) -> None:
            for name in names:
                for key in (f"qa_{name}", f"{prefix}qa_{name}"):
                    counters[key] = counters.get(key, 0) + 1
                    m[key] += 1

        bump("correct_num")
        truth = ann["truth"]
        if truth == "yes":
            if response == "Yes":
                bump("correct_score")
        else:
            bump("no_num")
            if response == "No":
                bump("correct_score", "no_score")
        if response == "No":
            bump("ans_no_num")
            if truth == "no":
                bump("ans_no_score")
        correct = int(response == ("Yes" if truth == "yes" else "No"))
        per_item.append(AmberOfficialYesNo(item_id, ann["type"], truth, response, correct, int(response == "No"),
                                           counters))

    def prf(*prefixes: str, f1_eps: float = 0.0001) -> dict[str, float]:
        # Attribute pools three types: numerators and (0.001-started) denominators summed left to right, as
        # inference.py writes it (sum() adds to 0 first, which changes no float).
        def total(name: str) -> float:
            return sum(m[f"{p}qa_{name}"] for p in prefixes)

        return _official_prf(total("correct_score"), total("correct_num"), total("ans_no_score"),
                             total("ans_no_num"), total("no_score"), total("no_num"), f1_eps)

    official = {
        "overall": prf(""),
        "existence": prf("ha_", f1_eps=0.001),  # inference.py's Existence F1 uses +0.001, the others +0.0001
        "attribute": prf("as_", "an_", "aa_"),
        "state": prf("as_"),
        "number": prf("an_"),
        "action": prf("aa_"),
        "relation": prf("asso_"),
        "counts": {k: sum(p.counters.get(k, 0) for p in per_item) for k in _DISCRIMINATIVE_COUNTERS},
    }
    return per_item, official


def amber_discriminative(
    responses: Mapping[int, str] | Iterable[Mapping], data: AmberData, *, mode: str = "offline"
) -> AmberDiscriminativeResult:
    """Precision, recall, F1 and accuracy of the yes/no responses (other ids are ignored).

    ``mode="offline"`` reads a leading yes/no (``parse_yes_no``); ``mode="official"`` counts only exactly "Yes"
    / "No" and adds inference.py's printed numbers (``official``) and per-item counters (``per_item``)."""
    _check_mode(mode)
    answers = _responses(responses)
    parse = parse_yes_no if mode == "offline" else _OFFICIAL_YES_NO.get
    rows: list[tuple[str, str, str | None]] = []
    unparseable = []
    for item_id in sorted(answers):
        ann = data.annotation(item_id)
        if ann["type"] == "generative":
            continue
        answer = parse(answers[item_id])
        if answer is None:
            unparseable.append(item_id)
        rows.append((ann["type"], ann["truth"], answer))
    by_dim = {
        dim: _yes_no([(t, a) for typ, t, a in rows if DISCRIMINATIVE_TYPES[typ] == dim])
        for dim in DIMENSIONS
        if any(DISCRIMINATIVE_TYPES[typ] == dim for typ, _, _ in rows)
    }
    by_type = {typ: _yes_no([(t, a) for ty, t, a in rows if ty == typ]) for typ in sorted({r[0] for r in rows})}
    overall = _yes_no([(t, a) for _, t, a in rows])
    if mode == "offline":
        return AmberDiscriminativeResult(overall, by_dim, by_type, tuple(unparseable))
    per_item, official = _official_discriminative(answers, data)
    return AmberDiscriminativeResult(overall, by_dim, by_type, tuple(unparseable), "official", official,
                                     tuple(per_item))


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
    _check_mode(mode)
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
