"""Read Silkie / VLFeedback or the released mDPO pair file into validated Instructions, quarantining
every row that cannot be used with the reason, the place and the offending input.

Rows are streamed: memory grows with the kept and quarantined rows (plus a small key per row for
duplicate detection), never with the raw file. Text checks run in the calling process; image checks,
the expensive part, run in worker processes over batches of rows, drained in input order. Checks run
in a fixed order and a row gets the first reason that applies. Prompts and responses are stored with
outer whitespace stripped.

VLFeedback rows come in two layouts, both accepted from jsonl and parquet: the raw release's, where
``completions`` is a list of {model, response, annotations}, and the Hugging Face ``datasets`` export's,
where it is one struct of equal-length lists ({"model": [...], "response": [...], "annotations": [...]},
nested structs of lists transposed the same way). The second is turned into the first before any check.
An ``img_path`` column, when a row has one, names its image; else it is ``merged_images/{id}.jpg``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import re
import shutil
import tempfile
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pyarrow.parquet as pq
from tqdm import tqdm

from mdpo_pipeline.core.images import (
    DEFAULT_MAX_PIXELS,
    ImageCheck,
    PathEscapeError,
    check_images,
    resolve_image_path,
)
from mdpo_pipeline.core.io import write_json, write_parquet
from mdpo_pipeline.core.parallel import available_cores, worker_context
from mdpo_pipeline.core.schemas import (
    ASPECTS,
    INSTRUCTIONS_SCHEMA,
    QUARANTINE_SCHEMA,
    Completion,
    Instruction,
    QuarantineReason,
    QuarantineRecord,
    instruction_to_row,
)

log = logging.getLogger(__name__)

R = QuarantineReason
FORMATS = ("vlfeedback", "mdpo_json", "hub")
IMAGE_CHECKS = ("full", "header", "none")
RAW_FILE = "vlfeedback_80k.jsonl"
SOURCE_FILE = "instruction_source.jsonl"
IMAGES_DIR = "merged_images"
IMAGES_ZIP = "merged_images.zip"
SOURCE_KEYS = ("source", "instruction_source", "dataset")
RATING_RANGE = (1.0, 5.0)  # GPT-4V's scale in VLFeedback
UNKNOWN = "unknown"
RAW_CHARS = 500
_BATCH = 32  # rows per image-check task: amortizes scheduling without hurting the ordered drain
_REASON_ORDER = {r: i for i, r in enumerate(QuarantineReason)}


class DataSourceUnavailable(RuntimeError):
    """The configured data source cannot be reached (e.g. the hub while offline)."""


@dataclass
class IngestConfig:
    """Where the raw preference data lives and how strictly to validate it."""

    format: str = "vlfeedback"  # "vlfeedback" (raw release), "mdpo_json" (released mDPO pairs) or "hub"
    path: str | Path | None = None  # data directory or file; for "hub", the directory to download into
    # Image paths resolve under this. Default: the data directory, or for a data file its folder; for the
    # released mDPO json that is where its img_path values ("images/llava-reasoning-3730.jpg") start from.
    image_root: str | Path | None = None
    image_check: str = "full"  # "full": decode every image; "header": format and size only; "none": skip
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # larger images are quarantined before decoding (bomb guard)
    # Source for mdpo_json rows without one: the released mDPO file is the LLaVA-sourced subset of
    # VLFeedback (FACTS §2) and carries no source field.
    default_source: str = "llava"
    hub_repo_id: str = "MMInstruction/VLFeedback"  # dataset repo holding the raw release files
    hub_revision: str | None = None  # pin a commit for reproducible downloads; None = main
    workers: int = 0  # processes for image checks; 0 = all available cores, 1 = inline (no processes)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"IngestConfig.format must be one of {FORMATS}, got {self.format!r}")
        if self.path is None or not str(self.path).strip():
            raise ValueError("IngestConfig.path is required: data directory or file ('hub': where to download)")
        self.path = Path(self.path).expanduser()
        if self.image_root is not None:
            self.image_root = Path(self.image_root).expanduser()
        if self.image_check not in IMAGE_CHECKS:
            raise ValueError(f"IngestConfig.image_check must be in {IMAGE_CHECKS}, got {self.image_check!r}")
        for name, lowest in (("max_image_pixels", 1), ("workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"IngestConfig.{name} must be an int >= {lowest}, got {value!r}")
        if not isinstance(self.default_source, str) or not self.default_source.strip():
            raise ValueError("IngestConfig.default_source must be a non-empty string")
        self.default_source = self.default_source.strip().lower()
        if not self.hub_repo_id or "/" not in self.hub_repo_id:
            raise ValueError(f"IngestConfig.hub_repo_id must be 'owner/name', got {self.hub_repo_id!r}")


@dataclass
class IngestResult:
    """Kept instructions, quarantined rows, and what was read."""

    instructions: list[Instruction]
    quarantine: list[QuarantineRecord]
    n_read: int  # rows read; every one is either kept or quarantined
    files: dict  # format, and the data and instruction-source files actually read (absolute paths)
    image_root: Path  # where Instruction.image paths resolve
    completions_dropped: Counter = field(default_factory=Counter)  # reason -> dropped completions, kept rows

    def __post_init__(self):
        if len(self.instructions) + len(self.quarantine) != self.n_read:
            raise AssertionError(
                f"ingest lost rows: {len(self.instructions)} kept + {len(self.quarantine)} quarantined "
                f"!= {self.n_read} read"
            )

    def counts_by_reason(self) -> dict[str, int]:
        """Quarantined rows per reason value."""
        counts = Counter(q.reason for q in self.quarantine)
        return {r.value: n for r, n in sorted(counts.items(), key=_reason_key)}

    def counts_by_source(self) -> dict[str, int]:
        """Kept instructions per source ("unknown" where the source file had no entry)."""
        return dict(sorted(Counter(i.source for i in self.instructions).items()))

    def summary(self, image_root: str | None = None) -> dict:
        """The summary written as summary.json; ``image_root`` overrides how the root is recorded."""
        # File names only (their directory is the configured path): a checkout elsewhere gives the same bytes.
        source = self.files["instruction_source"]
        files = self.files | {
            "data": [Path(p).name for p in self.files["data"]],
            "instruction_source": Path(source).name if source else None,
        }
        return {
            "n_read": self.n_read,
            "n_kept": len(self.instructions),
            "n_quarantined": len(self.quarantine),
            "quarantined_by_reason": self.counts_by_reason(),
            "kept_by_source": self.counts_by_source(),
            "completions_dropped": {
                r.value: n for r, n in sorted(self.completions_dropped.items(), key=_reason_key)
            },
            "files": files,
            "image_root": image_root if image_root is not None else str(self.image_root),
        }


def _reason_key(item: tuple[QuarantineReason, int]) -> int:
    return _REASON_ORDER[item[0]]


# --------------------------------------------------------------------------------------------- reading


class _Rec(NamedTuple):
    """One input row: its place, the parsed value (or the parse error) and the raw text if it had one."""

    file: str
    line: int  # 1-based line (jsonl) or 1-based record index (json array, parquet)
    obj: object
    raw: str | None = None
    error: str | None = None
    unit: str = "line"

    @property
    def where(self) -> str:
        return f"{self.file} {self.unit} {self.line}"

    def raw_text(self) -> str:
        text = self.raw if self.raw is not None else json.dumps(self.obj, ensure_ascii=False, default=str)
        return text[:RAW_CHARS]


def _iter_jsonl(path: Path) -> Iterator[_Rec]:
    # Binary lines: only b"\n" splits rows (text mode would also split on a lone \r inside a response).
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            try:
                yield _Rec(path.name, n, json.loads(line), text)
            except (ValueError, RecursionError) as e:  # bad JSON, invalid UTF-8, absurd nesting
                yield _Rec(path.name, n, None, text, f"line {n} is not valid JSON: {e}")


def _iter_parquet(path: Path) -> Iterator[_Rec]:
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            yield _Rec(path.name, n, row, unit="record")


def _iter_json_array(path: Path, chunk: int = 1 << 16) -> Iterator[_Rec]:
    """Stream the elements of a top-level JSON array without loading the whole file."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        buf, pos, base, eof = "", 0, 0, False  # base: absolute char offset of buf[0]

        def more() -> None:
            nonlocal buf, pos, base, eof
            data = f.read(chunk)
            eof = not data
            base += pos
            buf, pos = buf[pos:] + data, 0

        def peek() -> str:  # next non-space char ("" at end of file), consuming the spaces
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos].isspace():
                    pos += 1
                if pos < len(buf) or eof:
                    return buf[pos : pos + 1]
                more()

        def fail(n: int, msg: str, at: int) -> _Rec:
            # Past a syntax error element boundaries are unknown, so the rest of the file is lost.
            detail = f"record {n} is not valid JSON ({msg} at char {base + at}); rest of file not read"
            return _Rec(path.name, n, None, buf[pos : pos + RAW_CHARS], detail, "record")

        peek()
        pos += 1  # the "[" that _iter_json_any saw
        n = 0
        while (c := peek()) != "]":
            if n:
                if c != ",":
                    yield fail(n + 1, f"expected ',' or ']', found {c!r}" if c else "unexpected end", pos)
                    return
                pos += 1
                peek()
            while True:  # decode one element, reading on while the chunk boundary may have cut it
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    if end < len(buf) or eof:  # at the very end a number could still continue
                        break
                except json.JSONDecodeError as e:
                    cut = e.msg.startswith("Unterminated string") or e.pos >= len(buf) - 16
                    if eof or not cut:
                        yield fail(n + 1, e.msg, e.pos)
                        return
                except RecursionError:
                    yield fail(n + 1, "nesting too deep", pos)
                    return
                more()
            n += 1
            yield _Rec(path.name, n, obj, unit="record")
            pos = end


def _iter_json_any(path: Path) -> Iterator[_Rec]:
    """A JSON array file or JSON lines, told apart by the first non-space byte."""
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return _iter_json_array(path) if head.startswith(b"[") else _iter_jsonl(path)


# --------------------------------------------------------------------------------------------- validation


class _Reject(Exception):
    def __init__(self, reason: QuarantineReason, detail: str, id: str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.id = reason, detail, id


@dataclass(frozen=True)
class _Row:
    """A row that passed the text checks: the instruction (image unchecked) and its dedupe keys."""

    ins: Instruction
    keys: tuple[tuple[str, str], ...]  # ("id", value) / ("content", digest): a repeat is a duplicate
    dropped: Counter = field(default_factory=Counter)


def _type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


def _require(obj: dict, names: Iterable[str], rid: str | None) -> None:
    for name in names:
        if obj.get(name) is None:
            raise _Reject(R.MISSING_FIELD, f"required field '{name}' is missing", rid)
        if not isinstance(obj[name], str):
            got = _type_name(obj[name])
            raise _Reject(R.BAD_FIELD_TYPE, f"field '{name}' is {got}, expected string", rid)


def _parse_rating(value: object) -> tuple[float | None, QuarantineReason | None]:
    """VLFeedback ratings are strings ("4", " 5 ", "4.0") and sometimes "N/A"."""
    if isinstance(value, dict):
        value = value.get("Rating")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, R.MISSING_RATING
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None, R.NON_NUMERIC_RATING
    try:
        x = float(value)
    except ValueError:
        return None, R.NON_NUMERIC_RATING
    if not math.isfinite(x):
        return None, R.NON_NUMERIC_RATING
    if not RATING_RANGE[0] <= x <= RATING_RANGE[1]:
        return None, R.RATING_OUT_OF_RANGE
    return x, None


def _parse_completion(
    c: object, i: int, fallback_model: str, rid: str
) -> tuple[Completion, list[tuple[QuarantineReason, str]]]:
    """Parse one completion; return it with its defects (empty = usable)."""
    if not isinstance(c, dict):
        raise _Reject(R.BAD_FIELD_TYPE, f"completions[{i}] is {_type_name(c)}, expected object", rid)
    model = c.get("model") if isinstance(c.get("model"), str) else fallback_model
    response = c.get("response")
    if response is not None and not isinstance(response, str):
        got = _type_name(response)
        raise _Reject(R.BAD_FIELD_TYPE, f"completions[{i}].response is {got}, expected string", rid)
    where = f"completions[{i}] ({model})"
    response = (response or "").strip()
    defects = [] if response else [(R.EMPTY_RESPONSE, f"{where}: empty response")]
    annotations = c.get("annotations") if isinstance(c.get("annotations"), dict) else {}
    ratings: dict[str, float | None] = {}
    for aspect in ASPECTS:
        raw = annotations.get(aspect)
        ratings[aspect], defect = _parse_rating(raw)
        if defect is not None:
            shown = raw.get("Rating") if isinstance(raw, dict) else raw
            what = "missing" if defect is R.MISSING_RATING else f"{shown!r} is not a number in 1-5"
            defects.append((defect, f"{where}: '{aspect}' rating {what}"))
    return Completion(model, response, ratings), defects


class _Ragged(ValueError):
    """Column-wise completions whose columns have different lengths."""


def _as_column(value: object) -> list | None:
    """A list as is, or a struct of equal-length lists (nested ones too) transposed to a list of structs."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict) or not value:
        return None
    # A null column (pyarrow writes one for a struct field absent from the row) is simply absent.
    columns = {k: _as_column(v) for k, v in value.items() if v is not None}
    if not columns or any(c is None for c in columns.values()):
        return None
    lengths = {k: len(c) for k, c in columns.items()}
    if len(set(lengths.values())) > 1:
        raise _Ragged(", ".join(f"{k} {n}" for k, n in lengths.items()))
    n = next(iter(lengths.values()))
    return [{k: c[i] for k, c in columns.items()} for i in range(n)]


def _completion_rows(value: object, rid: str) -> list:
    """``completions`` in the row layout, from either the row layout or the ``datasets`` column-wise one."""
    try:
        rows = _as_column(value)
    except _Ragged as e:
        raise _Reject(R.BAD_FIELD_TYPE, f"field 'completions' is column-wise with unequal lengths ({e})", rid)
    if rows is None:
        got = _type_name(value)
        detail = f"field 'completions' is {got}, expected list (or a struct of equal-length lists)"
        raise _Reject(R.BAD_FIELD_TYPE, detail, rid)
    return rows


def _parse_vlfeedback(obj: object, ordinal: int, sources: dict[str, str]) -> _Row:
    """Validate one VLFeedback row; unusable completions are dropped, and counted."""
    if not isinstance(obj, dict):
        raise _Reject(R.BAD_FIELD_TYPE, f"row is {_type_name(obj)}, expected a JSON object")
    rid = obj.get("id") if isinstance(obj.get("id"), str) else None
    _require(obj, ("id", "prompt"), rid)
    if obj.get("completions") is None:
        raise _Reject(R.MISSING_FIELD, "required field 'completions' is missing", rid)
    if not rid.strip():
        raise _Reject(R.MISSING_FIELD, "field 'id' is empty", rid)
    comps_in = _completion_rows(obj["completions"], rid)
    img = obj.get("img_path")
    if img is not None and not isinstance(img, str):
        raise _Reject(R.BAD_FIELD_TYPE, f"field 'img_path' is {_type_name(img)}, expected string", rid)
    prompt = obj["prompt"].strip()
    if not prompt:
        raise _Reject(R.EMPTY_PROMPT, f"field 'prompt' is empty or whitespace ({obj['prompt']!r})", rid)
    models = obj.get("models") if isinstance(obj.get("models"), list) else []
    usable: list[Completion] = []
    dropped: Counter = Counter()
    details: list[str] = []
    for i, c in enumerate(comps_in):
        fallback = models[i] if i < len(models) and isinstance(models[i], str) else UNKNOWN
        comp, defects = _parse_completion(c, i, fallback, rid)
        if defects:
            dropped[min((d for d, _ in defects), key=_REASON_ORDER.__getitem__)] += 1
            details += [msg for _, msg in defects]
        else:
            usable.append(comp)
    if len(usable) < 2:
        # Name the defect that removed most completions (ties: enum order); none means there were too few.
        if dropped:
            reason = min(dropped, key=lambda r: (-dropped[r], _REASON_ORDER[r]))
        else:
            reason = R.TOO_FEW_COMPLETIONS
        shown = "".join(f"; {d}" for d in details[:6]) + ("; ..." if len(details) > 6 else "")
        raise _Reject(reason, f"{len(usable)} of {len(comps_in)} completions usable, need 2{shown}", rid)
    scores = sorted({round(c.score, 9) for c in usable})  # type: ignore[arg-type]
    if len(scores) == 1:
        detail = f"all {len(usable)} usable completions have mean rating {scores[0]:g}: no pair"
        raise _Reject(R.RATINGS_TIED, detail, rid)
    image = _posix(img).as_posix() if img and img.strip() else f"{IMAGES_DIR}/{rid}.jpg"
    ins = Instruction(
        id=rid, source=sources.get(rid, UNKNOWN), prompt=prompt, image=image, completions=tuple(usable),
    )
    return _Row(ins, (("id", rid),), dropped)


# LLaVA-1.5 / Vicuna v1 chat template used by the released mDPO file, optionally with its system line.
_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_PROMPT_TEMPLATES = (
    re.compile(
        rf"^\s*(?:{re.escape(_VICUNA_SYSTEM)})?\s*USER:\s*<image>\s*(?P<q>.*?)\s*ASSISTANT:\s*$", re.S
    ),
    re.compile(r"^\s*<image>\s*\n(?P<q>.*)$", re.S),
)


def _posix(p: str) -> PurePosixPath:
    return PurePosixPath(p.replace("\\", "/"))


def strip_prompt_template(prompt: str) -> str:
    """Recover the raw question from a templated prompt; the model's processor re-templates it later."""
    for pattern in _PROMPT_TEMPLATES:
        if m := pattern.match(prompt):
            return m["q"].strip()
    return prompt.strip()


def _parse_mdpo(obj: object, ordinal: int, default_source: str) -> _Row:
    """Validate one released-mDPO row {img_path, prompt, chosen, rejected} into a fixed-pair Instruction.

    The pair is fixed by the file, not by ratings: completions are (chosen, rejected) with no ratings
    (so ``Completion.usable`` is False) and ``preferred=(0, 1)``. Downstream must take the pair from
    ``preferred`` whenever it is set, never from ratings. ``img_path`` is relative to the image root, by
    default the json's own folder (the release puts ``images/`` next to it). Without an ``id`` the id is
    "{image stem}#{ordinal}" (ordinal = 1-based position in the input), stable for the same file.
    """
    if not isinstance(obj, dict):
        raise _Reject(R.BAD_FIELD_TYPE, f"row is {_type_name(obj)}, expected a JSON object")
    given_id = obj.get("id")
    if given_id is not None and (not isinstance(given_id, str) or not given_id.strip()):
        raise _Reject(R.BAD_FIELD_TYPE, f"field 'id' is {given_id!r}, expected a non-empty string")
    img = obj.get("img_path")
    rid = given_id or (f"{_posix(img).stem}#{ordinal}" if isinstance(img, str) else None)
    _require(obj, ("img_path", "prompt", "chosen", "rejected"), rid)
    prompt = strip_prompt_template(obj["prompt"])
    if not prompt:
        detail = f"field 'prompt' has no question once the template is stripped ({obj['prompt']!r})"
        raise _Reject(R.EMPTY_PROMPT, detail, rid)
    chosen, rejected = obj["chosen"].strip(), obj["rejected"].strip()
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text:
            raise _Reject(R.EMPTY_RESPONSE, f"field '{name}' is empty or whitespace only", rid)
    if chosen == rejected:
        raise _Reject(R.IDENTICAL_PAIR, "fields 'chosen' and 'rejected' are the same text", rid)
    source = obj.get("source")
    source = source.strip().lower() if isinstance(source, str) and source.strip() else default_source
    image = _posix(img).as_posix()
    content = json.dumps([img, obj["prompt"], obj["chosen"], obj["rejected"]], ensure_ascii=False)
    keys = (("content", hashlib.blake2b(content.encode(), digest_size=16).hexdigest()),)
    if given_id:
        keys += (("id", given_id),)
    completions = (Completion(UNKNOWN, chosen, {}), Completion(UNKNOWN, rejected, {}))
    return _Row(Instruction(rid, source, prompt, image, completions, preferred=(0, 1)), keys)


def _load_sources(path: Path) -> dict[str, str]:
    """Map instruction id -> lower-cased source from instruction_source.jsonl."""
    sources: dict[str, str] = {}
    bad = 0
    for rec in _iter_jsonl(path):
        obj = rec.obj if isinstance(rec.obj, dict) else {}
        src = next((obj[k] for k in SOURCE_KEYS if isinstance(obj.get(k), str) and obj[k].strip()), None)
        if isinstance(obj.get("id"), str) and src:
            sources[obj["id"]] = src.strip().lower()
        else:
            bad += 1
    if bad:
        log.warning("%s: skipped %d lines without a string id and source %s", path, bad, SOURCE_KEYS)
    return sources


# --------------------------------------------------------------------------------------------- engine


def _skip_images(paths: list[Path], mode: str, max_pixels: int) -> list[ImageCheck]:
    return [ImageCheck(True)] * len(paths)


def _image_pool(workers: int) -> Executor:
    """Worker processes: measured 15-30 % faster than threads, whose Python-level parts contend for the
    GIL with the JSON parsing on the reading thread."""
    if mp.current_process().daemon:  # daemonic processes may not have children
        return ThreadPoolExecutor(workers, thread_name_prefix="imgcheck")
    return ProcessPoolExecutor(workers, mp_context=worker_context())


def _submit(pool: Executor | None, fn: Callable, *args) -> Future:
    if pool is not None:
        return pool.submit(fn, *args)
    done: Future = Future()
    done.set_result(fn(*args))
    return done


def _run(
    files: list[Path],
    reader: Callable[[Path], Iterator[_Rec]],
    parse: Callable[[object, int], _Row],
    image_root: Path,
    cfg: IngestConfig,
    info: dict,
    progress: bool,
) -> IngestResult:
    """Text checks in order in this process, image checks in a bounded window of pool tasks."""
    image_root = image_root.resolve()
    workers = cfg.workers or available_cores()
    instructions: list[Instruction] = []
    quarantine: list[QuarantineRecord] = []
    dropped: Counter = Counter()
    seen: dict[tuple[str, str], str] = {}  # dedupe key -> where it was first kept
    batch: list[tuple[_Rec, _Row, Path]] = []
    in_flight: deque[tuple[list[tuple[_Rec, _Row, Path]], Future]] = deque()
    n_read = 0
    n_doubled = 0  # missing images found one folder up: image_root repeats the paths' first folder

    def finish(items: list[tuple[_Rec, _Row, Path]], checks: list[ImageCheck]) -> None:
        nonlocal n_doubled
        for (rec, row, _), chk in zip(items, checks, strict=True):
            if chk.ok:
                instructions.append(replace(row.ins, width=chk.width, height=chk.height))
                dropped.update(row.dropped)
            else:
                detail = chk.detail
                if chk.reason is R.MISSING_IMAGE and (hint := _doubled_root_hint(image_root, row.ins.image)):
                    detail += hint
                    n_doubled += 1
                quarantine.append(
                    QuarantineRecord(rec.file, rec.line, row.ins.id, chk.reason, detail, rec.raw_text())
                )
        bar.update(len(items))

    def submit(limit: int) -> None:
        if batch:
            paths = [p for _, _, p in batch]
            task = _submit(pool, check_fn, paths, cfg.image_check, cfg.max_image_pixels)
            in_flight.append((batch.copy(), task))
            batch.clear()
        while len(in_flight) > limit:  # drain oldest first, so output keeps input order
            items, task = in_flight.popleft()
            try:
                finish(items, task.result())
            except BrokenExecutor as e:
                raise RuntimeError(
                    "image-check worker processes died (killed, out of memory, or unable to start: a script "
                    "calling ingest needs an `if __name__ == '__main__':` guard). Set workers=1 to check "
                    "images in this process."
                ) from e

    check_fn = _skip_images if cfg.image_check == "none" else check_images
    use_pool = workers > 1 and cfg.image_check != "none"
    with (
        tqdm(unit="row", desc="ingest", disable=not progress) as bar,
        _image_pool(workers) if use_pool else contextlib.nullcontext() as pool,
    ):
        for rec in (rec for path in files for rec in reader(path)):
            n_read += 1
            try:
                if rec.error is not None:
                    raise _Reject(R.MALFORMED_JSON, rec.error)
                row = parse(rec.obj, n_read)
                for kind, value in row.keys:
                    if (kind, value) in seen:
                        what = f"id {value!r}" if kind == "id" else "(img_path, prompt, chosen, rejected)"
                        detail = f"{what} already kept from {seen[kind, value]}"
                        raise _Reject(R.DUPLICATE_ID, detail, row.ins.id)
                try:
                    path = resolve_image_path(image_root, row.ins.image)
                except PathEscapeError as e:
                    raise _Reject(e.reason, e.detail, row.ins.id) from None
            except _Reject as r:
                record = QuarantineRecord(rec.file, rec.line, r.id, r.reason, r.detail, rec.raw_text())
                quarantine.append(record)
                bar.update()
                continue
            seen.update((key, rec.where) for key in row.keys)
            batch.append((rec, row, path))
            if len(batch) >= _BATCH:
                submit(limit=4 * workers)
        submit(limit=0)

    if n_doubled:
        log.warning("%d images missing under %s%s", n_doubled, image_root, _doubled_root_hint(image_root, None))
    # Text rejects were recorded before the image rejects of earlier rows: restore input order.
    order = {p.name: i for i, p in enumerate(files)}
    quarantine.sort(key=lambda q: (order[q.file], q.line))
    return IngestResult(instructions, quarantine, n_read, info, image_root, dropped)


def _doubled_root_hint(image_root: Path, image: str | None) -> str:
    """Explain a missing image whose path already starts with image_root's own folder name ("" otherwise)."""
    if image is not None:
        parts = PurePosixPath(image).parts
        if len(parts) < 2 or parts[0] != image_root.name or not (image_root.parent / image).is_file():
            return ""
    return (
        f" (image paths start with '{image_root.name}/', the image root's own folder: set image_root to "
        f"{image_root.parent}, the folder they are relative to; for mdpo_json that is the default, "
        "the json's folder)"
    )


# --------------------------------------------------------------------------------------------- sources


def _missing(path: Path, expected: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path}: {expected}")


def _vlfeedback_files(path: Path) -> list[Path]:
    expect = (
        f"expected a VLFeedback directory with {RAW_FILE} (or other *.jsonl / *.parquet with the same "
        f"columns), {IMAGES_DIR}/ (unzipped {IMAGES_ZIP}) and {SOURCE_FILE}, or one such data file"
    )
    if not path.exists():
        raise _missing(path, "does not exist; " + expect)
    if path.is_file():
        return [path]
    if (path / RAW_FILE).is_file():
        return [path / RAW_FILE]
    files = sorted(p for p in path.glob("*.jsonl") if p.name != SOURCE_FILE) or sorted(path.glob("*.parquet"))
    if not files:
        raise _missing(path, "has no data files; " + expect)
    return files


def _read_vlfeedback_file(path: Path) -> Iterator[_Rec]:
    return _iter_parquet(path) if path.suffix == ".parquet" else _iter_jsonl(path)


def _files_info(fmt: str, files: list[Path], source_file: Path | None) -> dict:
    return {
        "format": fmt,
        "data": [str(p.resolve()) for p in files],
        "instruction_source": str(source_file.resolve()) if source_file else None,
    }


def _ingest_vlfeedback(cfg: IngestConfig, path: Path, fmt: str, progress: bool) -> IngestResult:
    files = _vlfeedback_files(path)
    data_dir = path if path.is_dir() else path.parent
    image_root = Path(cfg.image_root or data_dir)
    if cfg.image_check != "none" and not (image_root / IMAGES_DIR).is_dir():
        zipped = (image_root / IMAGES_ZIP).exists()
        hint = f" ({image_root / IMAGES_ZIP} exists: unzip it there)" if zipped else ""
        raise _missing(image_root / IMAGES_DIR, f"not found{hint}; set image_root, or image_check='none'")
    source_file: Path | None = data_dir / SOURCE_FILE
    if source_file.is_file():
        sources = _load_sources(source_file)
    else:
        log.warning("%s not found: every instruction gets source %r", source_file, UNKNOWN)
        source_file, sources = None, {}
    return _run(
        files, _read_vlfeedback_file, lambda obj, ordinal: _parse_vlfeedback(obj, ordinal, sources),
        image_root, cfg, _files_info(fmt, files, source_file), progress,
    )


def _ingest_mdpo(cfg: IngestConfig, progress: bool) -> IngestResult:
    path = Path(cfg.path)
    expect = "expected the released mDPO pairs: a .json array or .jsonl of {img_path, prompt, chosen, rejected}"
    if not path.exists():
        raise _missing(path, "does not exist; " + expect)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
    if not files:
        raise _missing(path, "has no .json/.jsonl files; " + expect)
    image_root = Path(cfg.image_root or (path if path.is_dir() else path.parent))
    if cfg.image_check != "none" and not image_root.is_dir():
        raise _missing(image_root, "image_root is not a directory; set image_root, or image_check='none'")
    return _run(
        files, _iter_json_any, lambda obj, ordinal: _parse_mdpo(obj, ordinal, cfg.default_source),
        image_root, cfg, _files_info("mdpo_json", files, None), progress,
    )


def _hub_help(cfg: IngestConfig, why: str) -> str:
    return (
        f"Hugging Face hub unreachable for dataset {cfg.hub_repo_id!r} ({why}). "
        f"Supply the raw files locally instead: download {RAW_FILE}, {IMAGES_ZIP} (unzip it so that "
        f"{IMAGES_DIR}/ sits next to the jsonl) and {SOURCE_FILE} from "
        f"https://huggingface.co/datasets/{cfg.hub_repo_id} into one directory, then set "
        f"format='vlfeedback' and path=<that directory>. To download here, set HF_HUB_OFFLINE=0 "
        f"before the process starts (mdpo_pipeline defaults it to 1)."
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _download_hub(cfg: IngestConfig) -> Path:
    """Fetch the raw release files into cfg.path and unzip the images once; return the directory."""
    if _env_true("HF_HUB_OFFLINE"):
        raise DataSourceUnavailable(_hub_help(cfg, "HF_HUB_OFFLINE is set"))
    from huggingface_hub import snapshot_download  # imported late: only this path needs it

    target = Path(cfg.path)
    try:
        snapshot_download(
            cfg.hub_repo_id, repo_type="dataset", revision=cfg.hub_revision, local_dir=target,
            allow_patterns=[RAW_FILE, SOURCE_FILE, IMAGES_ZIP],
        )
    except OSError as e:  # hub errors (offline, connection, not found, gated) all derive from OSError
        raise DataSourceUnavailable(_hub_help(cfg, f"{type(e).__name__}: {e}")) from e
    _extract_images(target)
    return target


def _extract_images(directory: Path) -> None:
    """Unzip merged_images.zip into directory/merged_images atomically (a crash leaves no half folder)."""
    final = directory / IMAGES_DIR
    if final.is_dir():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{IMAGES_DIR}.", dir=directory))
    try:
        with zipfile.ZipFile(directory / IMAGES_ZIP) as zf:
            zf.extractall(tmp)  # zipfile drops absolute and ".." member paths, so nothing lands outside tmp
        inner = tmp / IMAGES_DIR  # the release zips the folder itself
        os.replace(inner if inner.is_dir() else tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------- public


def ingest(cfg: IngestConfig, progress: bool = False) -> IngestResult:
    """Read, validate and quarantine according to cfg.format."""
    if cfg.format == "mdpo_json":
        return _ingest_mdpo(cfg, progress)
    if cfg.format == "hub":
        return _ingest_vlfeedback(cfg, _download_hub(cfg), "hub", progress)
    return _ingest_vlfeedback(cfg, Path(cfg.path), "vlfeedback", progress)


def write_ingest(
    result: IngestResult, out_dir: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> dict:
    """Write instructions.parquet, quarantine.parquet and summary.json; return the summary.

    ``image_root`` is how summary.json records the image root (e.g. relative to the project, so the
    bytes do not depend on the checkout's location); default: the absolute path.
    """
    out = Path(out_dir)
    rows = (instruction_to_row(i) for i in result.instructions)
    write_parquet(rows, out / "instructions.parquet", INSTRUCTIONS_SCHEMA)
    records = (asdict(q) | {"reason": q.reason.value} for q in result.quarantine)
    write_parquet(records, out / "quarantine.parquet", QUARANTINE_SCHEMA)
    summary = result.summary(None if image_root is None else str(image_root))
    write_json(summary, out / "summary.json")
    return summary
