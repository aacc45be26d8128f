"""Official mode: RLHF-V's ``eval/eval_gpt_obj_halbench.py`` rule-based path (no ``--use_gpt``) and its
summariser reproduced: NLTK ``word_tokenize`` and WordNet lemmas, RLHF-V's ``synonyms_refine.txt`` and
double-word table. Needs NLTK's ``punkt_tab`` and ``wordnet`` data."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from mdpo_pipeline.core.eval.chair.scoring import ChairAnswer, ChairResult
from mdpo_pipeline.core.eval.chair.synonyms import _COCO_ANIMALS
from mdpo_pipeline.core.eval.common import ratio

#: Installs the NLTK data both official scorers (AMBER's and this one) read.
NLTK_INSTALL = "python -m nltk.downloader punkt_tab wordnet averaged_perceptron_tagger_eng"
#: The trailing slash lets nltk find a corpus inside its zip (``wordnet.zip/wordnet``).
_NLTK_NEEDS = ("tokenizers/punkt_tab/english/", "corpora/wordnet/")
_RLHFV_SYNONYMS = "RLHF-V's eval/data/synonyms_refine.txt (https://github.com/RLHF-V/RLHF-V)"


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
    chair_s, chair_s_refine, chair_i = ratio(n_bad, n), ratio(n_bad, n_with_objects), ratio(n_halluc, n_mentions)
    # The official counters are floats (they start at 0.); the summariser prints the counts as such ("300.0").
    official: dict[str, Any] = {
        "CHAIRs": chair_s,
        "CHAIRs_refine": chair_s_refine,
        "CHAIRi": chair_i,
        "obj_rec": ratio(n_covered, n_truth),
        "sentence_num": float(n),
        "coco_sentence_num": float(n_with_objects),
        "coco_word_count": float(n_covered),
        "gt_word_count": float(n_truth),
        "avg_word_len": ratio(total_words, n),
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
