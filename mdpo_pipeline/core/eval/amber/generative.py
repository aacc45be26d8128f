"""AMBER's generative task: CHAIR, Cover, Hal and Cog of the answers' object nouns, offline (rule-based
nouns, optional word-vector rescue) or official (inference.py reproduced on NLTK)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from lemminflect import getAllLemmas

from mdpo_pipeline.core.eval.amber.common import _official_start
from mdpo_pipeline.core.eval.common import check_mode, ratio
from mdpo_pipeline.core.eval.amber.data import AmberData, _responses
from mdpo_pipeline.core.eval.amber.nltk_tools import _nltk_tools
from mdpo_pipeline.core.eval.chair.synonyms import expand_tokens, noun_forms, tokenize

#: answer text -> its nouns (an alternative tagger, or an LLM judge).
NounExtractor = Callable[[str], Sequence[str]]
#: (word, word) -> similarity in [-1, 1], e.g. cosine of word vectors.
Similarity = Callable[[str, str], float]
OFFICIAL_SIMILARITY = 0.8  #: the official scorer's word-vector threshold
OFFICIAL_SPACY_MODEL = "en_core_web_lg"

_MODALS = frozenset({"can", "could", "will", "would", "may", "might", "must", "shall", "should"})
_SUBJECTS = frozenset({"i", "you", "we", "they", "he", "she", "it"})


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


#: metrics.txt's starting values: every denominator starts at 0.001
_GENERATIVE_COUNTERS = ("chair_score", "chair_num", "safe_cover_score", "safe_cover_num", "hallu_cover_score",
                        "hallu_cover_num", "non_hallu_score", "non_hallu_num")


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
    check_mode(mode, "AMBER")
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
            chair=ratio(c["chair_score"], c["chair_num"]),
            cover=ratio(c["safe_cover_score"], c["safe_cover_num"]),
            hal=ratio(n - c["non_hallu_score"], n),
            cog=ratio(c["hallu_cover_score"], c["hallu_cover_num"]),
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
        chair=ratio(n_halluc, n_nouns),
        cover=ratio(n_covered, n_truth),
        hal=ratio(n_bad, len(per_answer)),
        cog=ratio(n_cog, n_hallu),
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
