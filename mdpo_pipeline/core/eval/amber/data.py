"""AMBER's data: annotations, queries, the object vocabulary (relation.json) and safe words, loaded from its
repository layout and checked; responses read from a mapping or the official inference file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

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
AMBER_SOURCE = "https://github.com/junyangwang0410/AMBER"


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
