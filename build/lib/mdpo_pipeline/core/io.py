"""Deterministic, atomic file output: the same rows give the same bytes, and a crash never leaves half a file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(path: Path) -> None:
    # mkstemp/mkdtemp create owner-only (0600/0700) entries; outputs are shared (containers, other users).
    mask = _umask()
    if path.is_dir():
        for p in (path, *path.rglob("*")):
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
    else:
        path.chmod(0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success rename it into place, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publishable(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp directory; on success it replaces ``path`` whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publishable(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_parquet(rows: Iterable[dict] | pa.Table, path: str | os.PathLike, schema: pa.Schema) -> int:
    """Write rows atomically as zstd parquet with a fixed schema; return the row count.

    Byte-identical for identical rows under the same pyarrow version (no timestamps are written).
    """
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows), schema=schema)
    if table.schema != schema:
        table = table.cast(schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=64_000)
    return table.num_rows


def read_parquet_rows(path: str | os.PathLike) -> list[dict]:
    """Read a parquet file into a list of dicts."""
    return pq.read_table(path).to_pylist()


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace variance, for hashing and stable files."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def write_json(obj, path: str | os.PathLike) -> None:
    """Write pretty, key-sorted JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(rows: Iterable[dict], path: str | os.PathLike) -> int:
    """Write one canonical JSON object per line atomically; return the line count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(canonical_json(row) + "\n")
            n += 1
    return n


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_seed(*parts: object) -> int:
    """A 64-bit seed derived from the parts' string forms: independent of PYTHONHASHSEED and process."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")
