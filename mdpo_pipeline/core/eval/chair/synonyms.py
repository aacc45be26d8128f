"""CHAIR's words: lower-cased tokens, their noun forms (``lemminflect``), and the synonym table that maps
phrases (longest first) to canonical categories, with CHAIR's hard-coded COCO rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lemminflect import getLemma

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
