"""The file-format readers: JSON lines, parquet, a streaming top-level JSON array (never the whole file in
memory), and the instruction-source file. Each input row becomes a ``_Rec``: its place, the parsed value or
the parse error, and the raw text when it had one."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq

log = logging.getLogger(__name__)

SOURCE_KEYS = ("source", "instruction_source", "dataset")
RAW_CHARS = 500


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


def _read_vlfeedback_file(path: Path) -> Iterator[_Rec]:
    return _iter_parquet(path) if path.suffix == ".parquet" else _iter_jsonl(path)


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
