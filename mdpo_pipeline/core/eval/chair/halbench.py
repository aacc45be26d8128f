"""Object HalBench's files: prompts, answers (RLHF-V's ``--cap_file`` layout), COCO-format annotations and
the truth built from them; ``ObjectHalBench`` scores answers in either mode."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mdpo_pipeline.core.eval.chair.official import _RLHFV_SYNONYMS, OfficialChairRules, official_chair_scores
from mdpo_pipeline.core.eval.chair.scoring import ChairResult, Extractor, chair_scores
from mdpo_pipeline.core.eval.chair.synonyms import SynonymTable
from mdpo_pipeline.core.eval.common import check_mode

_COCO_DOWNLOAD = (
    "the COCO 2014 annotations download (annotations_trainval2014.zip from https://cocodataset.org/#download, "
    "which holds instances_{train,val}2014.json and captions_{train,val}2014.json)"
)


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
        check_mode(self.mode, "Object HalBench")
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
    check_mode(mode, "Object HalBench")
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
