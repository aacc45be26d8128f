"""Where the raw files come from: a VLFeedback directory or data file, the released mDPO pairs, or the
Hugging Face hub (downloaded, its image zip extracted); ``ingest`` picks one by ``cfg.format``."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from mdpo_pipeline.core.ingest.config import IMAGES_DIR, IMAGES_ZIP, RAW_FILE, SOURCE_FILE, IngestConfig
from mdpo_pipeline.core.ingest.engine import _run
from mdpo_pipeline.core.ingest.readers import _iter_json_any, _load_sources, _read_vlfeedback_file
from mdpo_pipeline.core.ingest.result import IngestResult
from mdpo_pipeline.core.ingest.validation import UNKNOWN, _parse_mdpo, _parse_vlfeedback

log = logging.getLogger(__name__)


class DataSourceUnavailable(RuntimeError):
    """The configured data source cannot be reached (e.g. the hub while offline)."""


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
