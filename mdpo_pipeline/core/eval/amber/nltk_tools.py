"""Official mode's NLTK: the tokenizer, tagger and lemmatizer inference.py uses, its data checked up front."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

NLTK_INSTALL = "python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet"

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
