"""Object HalBench's rule-based CHAIR: a CHAIR synonym table, object extraction, CHAIR_s / CHAIR_i / recall.

Two scoring modes:

``offline`` (the default; ShapeWorld and anything without NLTK data) follows FACTS §5 and the CHAIR scorer
(Rohrbach et al. 2018) as Object HalBench uses it:

- an answer is tokenised and lower-cased, every word is tried as written and as its noun lemma
  (``lemminflect``, which ships its data), and phrases are matched longest first, so "half moon"
  is one mention of ``half moon`` and never also a ``moon``;
- each matched phrase maps through the synonym list to its canonical category;
- ground truth of an image = its COCO instance categories ∪ the categories found the same way in its
  reference captions;
- CHAIR_s = answers with ≥ 1 hallucinated mention / answers; CHAIR_i = hallucinated mentions / all
  mentions (repeats count, as in CHAIR); recall = distinct truth categories mentioned / truth
  categories, summed over answers.

``official`` reproduces RLHF-V's ``eval/eval_gpt_obj_halbench.py`` rule-based path (no ``--use_gpt``) and its
summariser exactly, per answer and in aggregate: NLTK ``word_tokenize`` and WordNet lemmas, RLHF-V's
``synonyms_refine.txt`` and double-word table, COCO train2014 + val2014 annotations. It needs NLTK's
``punkt_tab`` and ``wordnet`` data (found through NLTK_DATA / ``nltk.data.path``).

All metrics are fractions in [0, 1] (papers print them ×100); an empty denominator gives 0.
Pure Python: no Dagster, no torch.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

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
    image_id: int | None = None  #: set when scored through an ObjectHalBench
    # Official mode only: the answer after RLHF-V's cleaning, its word list after merging (the official
    # "words") and the official hallucination_idxs, kept as the official code fills them.
    caption: str | None = None
    tokens: tuple[str, ...] = ()
    hallucination_idxs: tuple[int, ...] = ()

    @property
    def chair_i(self) -> float:
        """This answer's hallucinated mentions / mentions."""
        return _ratio(len(self.hallucinated), len(self.mentioned))

    @property
    def hallucinated_words(self) -> tuple[str, ...]:
        """The matched words of the hallucinated mentions, aligned with ``hallucinated``."""
        truth = set(self.truth)
        return tuple(w for w, c in zip(self.words, self.mentioned) if c not in truth)

    def as_dict(self) -> dict:
        """JSON-ready form."""
        out: dict[str, Any] = {} if self.image_id is None else {"image_id": self.image_id}
        out |= {
            "mentioned": list(self.mentioned),
            "words": list(self.words),
            "hallucinated": list(self.hallucinated),
            "covered": list(self.covered),
            "truth": list(self.truth),
            "unmatched": list(self.unmatched),
            "chair_s": int(bool(self.hallucinated)),
            "chair_i": self.chair_i,
        }
        if self.caption is not None:
            out |= {"caption": self.caption, "tokens": list(self.tokens),
                    "hallucination_idxs": list(self.hallucination_idxs)}
        return out

    def official_record(self) -> dict:
        """This answer under the official scorer's names (words, [word, class] pairs, gt_objects, ...)."""
        if self.caption is None:
            raise ValueError("official_record needs an answer scored in official mode")
        return {
            "image_id": self.image_id,
            "caption": self.caption,
            "words": list(self.tokens),
            "mentioned": [[w, c] for w, c in zip(self.words, self.mentioned)],
            "hallucinated": [[w, c] for w, c in zip(self.hallucinated_words, self.hallucinated)],
            "hallucination_idxs": list(self.hallucination_idxs),
            "gt_objects": list(self.truth),
            "correct_classes": list(self.covered),
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
    mode: str = "offline"  #: "offline" (lemminflect rules) or "official" (RLHF-V's scorer reproduced)
    #: Official mode: the official overall_metrics (CHAIRs, CHAIRs_refine, CHAIRi, obj_rec, ...) plus integer
    #: ``counts``, and the summariser's lines (Response Hall, Object Hall, Object Recall, ... as printed).
    official: Mapping[str, Any] | None = None
    official_summary: Mapping[str, str] | None = None

    def as_dict(self, detail: bool = False) -> dict:
        """Metrics and counts (flat, for logging); ``detail`` adds the per-answer records."""
        out = {k: getattr(self, k) for k in (
            "chair_s", "chair_i", "recall", "n_answers", "n_hallucinated_answers", "n_mentions",
            "n_hallucinated_mentions", "n_truth", "n_covered", "extractor", "mode",
        )}
        if self.official is not None:
            out["official"] = json.loads(json.dumps(self.official))
            out["official_summary"] = dict(self.official_summary or {})
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


# --- official mode: RLHF-V's eval_gpt_obj_halbench.py, rule-based path -------------------------

#: Installs the NLTK data both official scorers (AMBER's and this one) read.
NLTK_INSTALL = "python -m nltk.downloader punkt_tab wordnet averaged_perceptron_tagger_eng"
#: The trailing slash lets nltk find a corpus inside its zip (``wordnet.zip/wordnet``).
_NLTK_NEEDS = ("tokenizers/punkt_tab/english/", "corpora/wordnet/")
MODES = ("offline", "official")
_RLHFV_SYNONYMS = "RLHF-V's eval/data/synonyms_refine.txt (https://github.com/RLHF-V/RLHF-V)"
_COCO_DOWNLOAD = (
    "the COCO 2014 annotations download (annotations_trainval2014.zip from https://cocodataset.org/#download, "
    "which holds instances_{train,val}2014.json and captions_{train,val}2014.json)"
)


class _OfficialNlp:
    """NLTK's word_tokenize and WordNetLemmatizer().lemmatize(word) (noun default), as the official code calls them."""

    def __init__(self, wordnet_root: Any):
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
        from nltk.stem import WordNetLemmatizer

        class _WordNet(WordNetCorpusReader):
            # The reader maps sense keys between WordNet versions on load, for the multilingual (OMW) functions
            # only; lemmatising never reads that map and skipping it halves the load time.
            def map_wn(self, version="wordnet"):
                return None

        class _Lemmatizer(WordNetLemmatizer):
            # NLTK's own lemmatize(), over the WordNet found on nltk.data.path now rather than the lazy global one.
            def _morphy(self, form, pos, check_exceptions=True):
                return wordnet._morphy(form, pos, check_exceptions)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": not used here
            wordnet = _WordNet(wordnet_root, None)
        self.word_tokenize: Callable[[str], list[str]] = nltk.word_tokenize
        self._lemmatize = _Lemmatizer().lemmatize
        self._lemmas: dict[str, str] = {}

    def lemmatize(self, word: str) -> str:
        """WordNet's shortest noun lemma of ``word``, or the word itself."""
        lemma = self._lemmas.get(word)
        if lemma is None:
            lemma = self._lemmas[word] = self._lemmatize(word)
        return lemma


@lru_cache(maxsize=4)
def _official_nlp_for(paths: tuple[str, ...]) -> _OfficialNlp:
    import nltk

    found = {}
    for resource in _NLTK_NEEDS:
        try:
            found[resource] = nltk.data.find(resource)
        except LookupError as exc:
            raise LookupError(
                f"Object HalBench official mode needs NLTK's {resource.strip('/')!r} data, not found in "
                f"nltk.data.path {list(paths)}. Install it with `{NLTK_INSTALL}`, or set NLTK_DATA to a folder "
                f"holding it (nltk ≥ 3.10 ignores folders writable by group or others). NLTK said:\n{exc}"
            ) from None
    return _OfficialNlp(found["corpora/wordnet/"])


def official_nlp() -> _OfficialNlp:
    """The official scorer's tokenizer and lemmatizer; LookupError with install instructions when data is missing."""
    import nltk

    # Keyed by the search path, so data installed or NLTK_DATA changed later in the process is looked up anew.
    return _official_nlp_for(tuple(map(str, nltk.data.path)))


class OfficialWords(NamedTuple):
    """``caption_to_words``'s four results: object words, [word, class] pairs, their indices, all merged words."""

    words: list[str]
    node_words: list[list[str]]
    idxs: list[int]
    raw_words: list[str]


@dataclass(frozen=True, eq=False)
class OfficialChairRules:
    """RLHF-V's synonym list and double-word table, and its caption -> COCO objects procedure."""

    inverse_synonyms: Mapping[str, str]  #: every listed word -> the first word of its line (later lines win)
    objects: frozenset[str]  #: every listed word
    double_words: Mapping[str, str]  #: two-word phrase -> what it counts as
    nlp: _OfficialNlp = field(repr=False)
    source: str = "<lines>"

    @classmethod
    def from_lines(cls, lines: Iterable[str], *, source: str = "<lines>") -> OfficialChairRules:
        """Parse synonym lines as the official code does (``line.strip().split(', ')``); loads NLTK's data."""
        inverse: dict[str, str] = {}
        objects: set[str] = set()
        for line in lines:
            entries = [e.strip() for e in line.strip().split(", ")]
            objects.update(entries)
            for entry in entries:
                inverse[entry] = entries[0]
        if not any(inverse):
            raise ValueError(f"{source}: no synonym lines found (expected 'class, synonym1, synonym2' per line)")
        double = {w: w for w in inverse if len(w.strip().split(" ")) >= 2}
        double |= {w: w for w in ("home plate", "train track")}
        for animal in _COCO_ANIMALS:
            double[f"baby {animal}"] = animal
            double[f"adult {animal}"] = animal
        for vehicle in ("jet", "train"):
            double[f"passenger {vehicle}"] = vehicle
        # "wine glas" is what the lemmatizer makes of "wine glass(es)"; the official table lists it so.
        double |= {"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"}
        return cls(inverse, frozenset(objects), double, official_nlp(), source)

    @classmethod
    def from_file(cls, path: str | Path) -> OfficialChairRules:
        """Load RLHF-V's eval/data/synonyms_refine.txt (or another list in its format)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Object HalBench: synonym list {path} not found; supply {_RLHFV_SYNONYMS}")
        try:
            with path.open(encoding="utf-8") as fh:
                lines = fh.readlines()  # readlines, not splitlines: the official line splitting
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None
        return cls.from_lines(lines, source=str(path))

    @property
    def categories(self) -> tuple[str, ...]:
        """The classes (first words of the lines), sorted."""
        return tuple(sorted(set(self.inverse_synonyms.values()) - {""}))

    def caption_words(self, caption: str) -> OfficialWords:
        """``CHAIR.caption_to_words``: lower-cased NLTK tokens, lemmas, double words merged, the toilet-seat rule,
        then the listed words with their classes."""
        lemmas = [self.nlp.lemmatize(w) for w in self.nlp.word_tokenize(caption.lower())]
        merged: list[str] = []
        starts: list[int] = []
        i = 0
        while i < len(lemmas):
            starts.append(i)
            pair = " ".join(lemmas[i : i + 2])
            if pair in self.double_words:
                merged.append(self.double_words[pair])
                i += 2
            else:
                merged.append(lemmas[i])
                i += 1
        words = merged
        # "the seat of the toilet" would otherwise be a chair.
        if "toilet" in words and "seat" in words:
            words = [w for w in words if w != "seat"]
        # Indexing ``starts`` by the position after the seat removal is the official code's (shifted) indices.
        idxs = [starts[k] for k, w in enumerate(words) if w in self.objects]
        words = [w for w in words if w in self.objects]
        return OfficialWords(words, [[w, self.inverse_synonyms[w]] for w in words], idxs, merged)

    def caption_classes(self, caption: str) -> list[str]:
        """The classes a (reference) caption names, in order, repeats kept."""
        return [c for _, c in self.caption_words(caption).node_words]

    def category_class(self, name: str, source: str = "COCO") -> str:
        """The class of a COCO category name (its synonym-list entry)."""
        if name not in self.inverse_synonyms:
            raise ValueError(
                f"{source}: COCO category {name!r} is not in the synonym list {self.source}; expected {_RLHFV_SYNONYMS}"
            )
        return self.inverse_synonyms[name]


def clean_answer(text: str) -> str:
    """The official reader's cleaning: "Assistant:" removed, whitespace stripped."""
    return text.replace("Assistant:", "").strip()


def official_chair_scores(
    answers: Sequence[str],
    truths: Sequence[Iterable[str]],
    rules: OfficialChairRules,
    *,
    image_ids: Sequence[int] | None = None,
) -> ChairResult:
    """RLHF-V's rule-based CHAIR (``CHAIR.compute_chair``) of raw ``answers`` against each image's truth classes."""
    if isinstance(answers, str) or len(answers) != len(truths):
        raise ValueError(f"answers and truths must be sequences of equal length ({len(answers)} vs {len(truths)})")
    if image_ids is not None and len(image_ids) != len(answers):
        raise ValueError(f"image_ids must match answers ({len(image_ids)} vs {len(answers)})")
    per_answer = []
    total_words = 0
    for k, (answer, truth) in enumerate(zip(answers, truths)):
        if not isinstance(answer, str):
            raise TypeError(f"answers must be strings, got {type(answer).__name__}")
        if isinstance(truth, str):
            raise TypeError(f"each truth must be a collection of class names, got the string {truth!r}")
        caption = clean_answer(answer)
        total_words += len(caption.strip().split(" "))
        gt = set(truth)
        found = rules.caption_words(caption)
        classes = [c for _, c in found.node_words]
        per_answer.append(
            ChairAnswer(
                mentioned=tuple(classes),
                words=tuple(found.words),
                hallucinated=tuple(c for c in classes if c not in gt),
                covered=tuple(sorted(gt.intersection(classes))),
                truth=tuple(sorted(gt)),
                image_id=None if image_ids is None else image_ids[k],
                caption=caption,
                tokens=tuple(found.raw_words),
                hallucination_idxs=tuple(i for i, c in zip(found.idxs, classes) if c not in gt),
            )
        )
    n = len(per_answer)
    n_with_objects = sum(bool(a.mentioned) for a in per_answer)
    n_bad = sum(bool(a.hallucinated) for a in per_answer)
    n_mentions = sum(len(a.mentioned) for a in per_answer)
    n_halluc = sum(len(a.hallucinated) for a in per_answer)
    n_truth = sum(len(a.truth) for a in per_answer)
    n_covered = sum(len(a.covered) for a in per_answer)
    chair_s, chair_s_refine, chair_i = _ratio(n_bad, n), _ratio(n_bad, n_with_objects), _ratio(n_halluc, n_mentions)
    # The official counters are floats (they start at 0.); the summariser prints the counts as such ("300.0").
    official: dict[str, Any] = {
        "CHAIRs": chair_s,
        "CHAIRs_refine": chair_s_refine,
        "CHAIRi": chair_i,
        "obj_rec": _ratio(n_covered, n_truth),
        "sentence_num": float(n),
        "coco_sentence_num": float(n_with_objects),
        "coco_word_count": float(n_covered),
        "gt_word_count": float(n_truth),
        "avg_word_len": _ratio(total_words, n),
        "correct_rate": 1 - chair_s_refine,
        "object_correct_rate": 1 - chair_i,
        "counts": {
            "captions": n, "captions_with_coco_object": n_with_objects, "hallucinated_captions": n_bad,
            "mentions": n_mentions, "hallucinated_mentions": n_halluc, "correct_classes": n_covered,
            "gt_classes": n_truth,
        },
    }
    return ChairResult(
        chair_s=chair_s,
        chair_i=chair_i,
        recall=official["obj_rec"],
        n_answers=n,
        n_hallucinated_answers=n_bad,
        n_mentions=n_mentions,
        n_hallucinated_mentions=n_halluc,
        n_truth=n_truth,
        n_covered=n_covered,
        extractor="rule",
        per_answer=tuple(per_answer),
        mode="official",
        official=official,
        official_summary=official_summary(official),
    )


def official_summary(official: Mapping[str, Any]) -> dict[str, str]:
    """What eval/summarize_gpt_obj_halbench_review.py prints for one result: label -> printed value."""
    return {
        "Response Hall": f"{official['CHAIRs_refine'] * 100:.2f}",
        "Object Hall": f"{official['CHAIRi'] * 100:.2f}",
        "Response Correct": f"{official['correct_rate'] * 100:.2f}",
        "Object Correct": f"{official['object_correct_rate'] * 100:.2f}",
        "Object Recall": f"{official['obj_rec'] * 100:.2f}",
        "Average Length": f"{official['avg_word_len']:.2f}",
        "COCO Sent Number": f"{official['coco_sentence_num']}",
        "COCO Word Number": f"{official['coco_word_count']}",
        "GT Word Number": f"{official['gt_word_count']}",
    }


def official_print_metrics(official: Mapping[str, Any]) -> str:
    """The two lines eval_gpt_obj_halbench.py's print_metrics prints (its own format string)."""
    line = "%0.001f\t%0.001f\t%0.001f\t%d\t%d\t%0.01f" % (
        official["CHAIRs"] * 100, official["CHAIRs_refine"] * 100, official["CHAIRi"] * 100,
        official["sentence_num"], official["coco_sentence_num"], official["avg_word_len"],
    )
    return "CHAIRs\tCHAIRsr\tCHAIRi\tsent_num\tcoco_num\tavg_len\n" + line


# --- Object HalBench files ----------------------------------------------------------------------


@dataclass(frozen=True)
class HalBenchItem:
    """One Object HalBench prompt: the COCO image id, its image file name and the description prompt."""

    image_id: int
    image: str
    question: str


@dataclass(frozen=True)
class AnswerRecord:
    """One line of an answers file in RLHF-V's ``--cap_file`` layout."""

    image_id: int
    question: str
    answer: str  #: as in the file, before the official "Assistant:" removal


@dataclass(frozen=True)
class ObjectHalBench:
    """The benchmark's prompts, each image's truth categories and the synonym table to score with.

    ``mode="official"`` scores with ``rules`` (RLHF-V's scorer reproduced); ``truth`` was then built the official way.
    """

    items: tuple[HalBenchItem, ...]
    truth: Mapping[int, frozenset[str]]
    table: SynonymTable
    image_dir: Path | None = None
    mode: str = "offline"
    rules: OfficialChairRules | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Object HalBench mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.mode == "official" and self.rules is None:
            raise ValueError("Object HalBench official mode needs the official rules (OfficialChairRules)")

    def score(self, answers: Mapping[int, str], *, extract: Extractor | None = None) -> ChairResult:
        """CHAIR of answers keyed by image id (in the benchmark's item order)."""
        unknown = sorted(set(answers) - set(self.truth))
        if unknown:
            raise KeyError(f"answers for image ids not in the benchmark: {unknown[:10]}")
        ids = [it.image_id for it in self.items if it.image_id in answers]
        return self.score_pairs([(i, answers[i]) for i in ids], extract=extract)

    def score_pairs(self, pairs: Sequence[tuple[int, str]], *, extract: Extractor | None = None) -> ChairResult:
        """CHAIR of (image id, answer) pairs in their order; a repeated image counts each time, as officially."""
        unknown = sorted({i for i, _ in pairs} - set(self.truth))
        if unknown:
            raise KeyError(f"answers for image ids not in the benchmark: {unknown[:10]}")
        ids = [i for i, _ in pairs]
        texts = [a for _, a in pairs]
        truths = [self.truth[i] for i in ids]
        if self.mode == "official":
            if extract is not None:
                raise ValueError(
                    "Object HalBench official mode reproduces the rule-based scorer; an object extractor (the "
                    "official --use_gpt path) is not part of it: use mode offline with an extractor"
                )
            return official_chair_scores(texts, truths, self.rules, image_ids=ids)
        result = chair_scores(texts, truths, self.table, extract=extract)
        return replace(result, per_answer=tuple(replace(a, image_id=i) for a, i in zip(result.per_answer, ids)))

    def score_answers_file(self, path: str | Path) -> ChairResult:
        """CHAIR of an answers file in RLHF-V's --cap_file layout, in file order."""
        return self.score_pairs([(r.image_id, r.answer) for r in read_answers(path)])

    def image_path(self, item: HalBenchItem) -> Path:
        """The image file of ``item``; FileNotFoundError naming the folder when the images are not there."""
        if self.image_dir is None or not self.image_dir.is_dir():
            raise FileNotFoundError(
                f"Object HalBench: image folder {self.image_dir} not found; generating answers needs the COCO "
                "val2014 images (val2014.zip from https://cocodataset.org/#download); scoring does not"
            )
        path = self.image_dir / item.image
        if not path.is_file():
            raise FileNotFoundError(f"Object HalBench: image {path} of image id {item.image_id} not found")
        return path


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


def _json_lines(path: Path, what: str) -> Iterable[tuple[str, Mapping]]:
    _need(path, what)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not a JSON line ({exc})") from None
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {str(row)[:120]}")
        yield where, row


def _image_id(row: Mapping, where: str) -> int:
    image_id = _field(row, "image_id", where)
    if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or not str(image_id).isdigit():
        raise ValueError(f"{where}: image_id must be a COCO integer id, got {image_id!r}")
    return int(image_id)


def read_questions(path: str | Path) -> list[HalBenchItem]:
    """Read a prompt file: JSON lines with ``image_id`` and ``question`` (RLHF-V's obj_halbench_300_with_image.jsonl,
    whose ``image`` is base64, ShapeWorld's prompts.jsonl, whose ``image`` is a file name, or an answers file)."""
    path = Path(path)
    items = []
    for where, row in _json_lines(path, "the prompt file (JSON lines with image_id and question)"):
        image_id = _image_id(row, where)
        # The official answer reader takes "prompt" before "question".
        question = row["prompt"] if "prompt" in row else _field(row, "question", where)
        image = row.get("image")
        # RLHF-V embeds the picture as base64 under "image"; only a short file name is kept.
        if not (isinstance(image, str) and len(image) < 256 and image.lower().endswith((".jpg", ".jpeg", ".png"))):
            image = f"COCO_val2014_{image_id:012d}.jpg"
        items.append(HalBenchItem(image_id, image, str(question)))
    if not items:
        raise ValueError(f"{path}: no prompts found")
    return items


def read_answers(path: str | Path) -> list[AnswerRecord]:
    """Read answers in RLHF-V's --cap_file layout: JSON lines with ``image_id``, ``question`` (or ``prompt``) and
    ``answer`` (or ``text``, which the official reader takes first)."""
    path = Path(path)
    records = []
    for where, row in _json_lines(path, "the answers file (JSON lines with image_id, question and answer)"):
        image_id = _image_id(row, where)
        if "text" in row:
            answer = row["text"]
        elif "answer" in row:
            answer = row["answer"]
        else:
            raise ValueError(f"{where}: expected an 'answer' or 'text' field in {str(row)[:120]}")
        if not isinstance(answer, str):
            raise ValueError(f"{where}: the answer must be a string, got {answer!r}")
        question = row.get("prompt", row.get("question", ""))
        records.append(AnswerRecord(image_id, str(question), answer))
    if not records:
        raise ValueError(f"{path}: no answers found")
    return records


def _truth(
    instances: Mapping,
    captions: Mapping,
    image_ids: Iterable[int],
    category_class: Callable[[object], str],
    caption_classes: Callable[[str], Iterable[str]],
    source: str,
) -> dict[int, frozenset[str]]:
    wanted = set(image_ids)
    truth: dict[int, set[str]] = {}
    for data in (instances, captions):
        for image in data.get("images", []):
            if isinstance(image, Mapping) and image.get("id") in wanted:
                truth.setdefault(image["id"], set())
    for ann in _field(instances, "annotations", f"{source} instances"):
        image_id = _field(ann, "image_id", f"{source} instances")
        if image_id in wanted:
            truth.setdefault(image_id, set()).add(category_class(_field(ann, "category_id", f"{source} instances")))
    for ann in _field(captions, "annotations", f"{source} captions"):
        image_id = _field(ann, "image_id", f"{source} captions")
        if image_id in wanted:
            truth.setdefault(image_id, set()).update(caption_classes(str(_field(ann, "caption", f"{source} captions"))))
    # The official scorer would score such images against an empty truth; here they mean wrong annotation files.
    missing = sorted(wanted - set(truth))
    if missing:
        raise ValueError(
            f"{source}: no instance or caption annotations for image ids {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; are these the right annotation files?"
        )
    return {i: frozenset(objs) for i, objs in truth.items()}


def _category_names(instances: Mapping, source: str) -> dict[object, str]:
    names = {}
    for cat in _field(instances, "categories", f"{source} instances"):
        names[_field(cat, "id", f"{source} categories")] = str(_field(cat, "name", f"{source} categories"))
    return names


def _unknown_category(category_id: object, source: str) -> ValueError:
    return ValueError(f"{source} instances: category_id {category_id!r} is not among its categories")


def object_truth(
    instances: Mapping, captions: Mapping, table: SynonymTable, image_ids: Iterable[int], *, source: str = "COCO"
) -> dict[int, frozenset[str]]:
    """Each image's truth: its instance categories ∪ the categories its reference captions mention (CHAIR).

    ``instances`` / ``captions`` are COCO annotation files (``images``, ``annotations``, ``categories``).
    An image listed in either file with no instances has whatever its captions give (possibly nothing).
    """
    classes = {cid: table.canonical(name) for cid, name in _category_names(instances, source).items()}

    def category_class(category_id: object) -> str:
        if category_id not in classes:
            raise _unknown_category(category_id, source)
        return classes[category_id]

    return _truth(instances, captions, image_ids, category_class, table.objects, source)


def official_truth(
    instances: Mapping, captions: Mapping, rules: OfficialChairRules, image_ids: Iterable[int], *, source: str = "COCO"
) -> dict[int, frozenset[str]]:
    """Each image's truth as the official scorer builds it: the synonym-list class of each instance's category name
    ∪ the classes ``rules.caption_words`` finds in its reference captions."""
    names = _category_names(instances, source)

    def category_class(category_id: object) -> str:
        if category_id not in names:
            raise _unknown_category(category_id, source)
        return rules.category_class(names[category_id], source)

    return _truth(instances, captions, image_ids, category_class, rules.caption_classes, source)


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


def coco_annotation_folder(coco_annotations: str | Path | None) -> Path:
    """The folder holding COCO 2014's annotation files (or its ``annotations/`` subfolder, as the zip unpacks)."""
    if coco_annotations is None:
        raise FileNotFoundError(f"Object HalBench: no COCO annotations folder given; supply {_COCO_DOWNLOAD}")
    folder = Path(coco_annotations)
    if not folder.is_dir():
        raise FileNotFoundError(f"Object HalBench: COCO annotations folder {folder} not found; supply {_COCO_DOWNLOAD}")
    if not (folder / "instances_val2014.json").is_file() and (folder / "annotations").is_dir():
        folder = folder / "annotations"
    return folder


def read_coco_annotations(folder: str | Path) -> tuple[dict, dict]:
    """(instances, captions) of COCO train2014 + val2014 merged as the official scorer merges them (the train
    file's categories)."""
    folder = Path(folder)
    data = {}
    for kind in ("instances", "captions"):
        for split in ("val", "train"):
            name = f"{kind}_{split}2014.json"
            data[kind, split] = _read_json(folder / name, f"{name} from {_COCO_DOWNLOAD}")
    merged = []
    for kind in ("instances", "captions"):
        val, train = data[kind, "val"], data[kind, "train"]
        where = str(folder / f"{kind}_{{val,train}}2014.json")
        out = {
            "images": [*val.get("images", []), *train.get("images", [])],
            "annotations": [*_field(val, "annotations", where), *_field(train, "annotations", where)],
        }
        if kind == "instances":
            out["categories"] = _field(train, "categories", str(folder / "instances_train2014.json"))
        merged.append(out)
    return merged[0], merged[1]


def load_object_halbench_coco(
    questions: str | Path | None,
    coco_annotations: str | Path | None,
    synonyms: str | Path | None,
    *,
    image_dir: str | Path | None = None,
    mode: str = "offline",
) -> ObjectHalBench:
    """Load the real benchmark: a prompt (or answers) file, COCO 2014 annotations and a synonym list.

    ``coco_annotations`` holds ``instances_{train,val}2014.json`` and ``captions_{train,val}2014.json`` (the official
    scorer merges both splits); ``synonyms`` is RLHF-V's eval/data/synonyms_refine.txt. ``mode="official"`` scores
    with RLHF-V's rule-based scorer reproduced (needs NLTK data). Images are only needed to generate answers.
    """
    if mode not in MODES:
        raise ValueError(f"Object HalBench mode {mode!r}: use one of {', '.join(MODES)}")
    if questions is None:
        raise FileNotFoundError("Object HalBench: no prompt file given; supply RLHF-V's obj_halbench_300_with_image"
                                ".jsonl (or an answers file with image_id and question)")
    folder = coco_annotation_folder(coco_annotations)
    if synonyms is None or not Path(synonyms).is_file():
        what = "no synonym list given" if synonyms is None else f"synonym list {synonyms} not found"
        raise FileNotFoundError(f"Object HalBench: {what}; supply {_RLHFV_SYNONYMS}")
    table = SynonymTable.from_file(synonyms, coco_rules=True)
    # Before the big COCO files: a missing NLTK install should not cost a minute of JSON parsing first.
    rules = OfficialChairRules.from_file(synonyms) if mode == "official" else None
    items = read_questions(questions)
    instances, captions = read_coco_annotations(folder)
    ids = [it.image_id for it in items]
    if rules is not None:
        truth = official_truth(instances, captions, rules, ids, source=str(folder))
    else:
        truth = object_truth(instances, captions, table, ids, source=str(folder))
    return ObjectHalBench(
        tuple(items), truth, table, Path(image_dir) if image_dir is not None else None, mode=mode, rules=rules
    )


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
