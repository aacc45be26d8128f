"""Where the conformance fixtures are, and what a test does when they are not there.

The conformance fixtures are real public benchmark and data files (AMBER, RLHF-V's Object HalBench files and
synonyms, LLaVA-RLHF's MMHal judge scripts, a VLFeedback sample), answers scored by the official scorers with
those scorers' own outputs, and NLTK data. Licences and size keep them outside the repository, in
``../shared/conformance/`` beside the checkout; its README.md says where each file came from and how each
official output was made (docs/benchmarks.md, "Conformance fixtures").

A test that needs them carries ``needs(path, ...)`` (or calls ``require`` itself). When a path is missing it
**skips** on a developer machine, saying what is missing and what the fixtures are, but **fails** where the
environment variable ``CI`` is set (non-empty, as CI services set ``CI=true``): there a missing fixture is a
broken setup, not a reason to pass without checking anything. tests/conftest.py applies the marker.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The folder the fixtures are expected in: ``shared/conformance`` next to the repository's root folder.
CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
#: The marker that ``needs`` makes and tests/conftest.py acts on.
MARKER = "conformance"


def about() -> str:
    """What the fixtures are and where they are expected, for skip and failure messages."""
    return ("the conformance fixtures (real public benchmark/data files and the official scorers' outputs) are kept "
            f"outside the repository, in ../shared/conformance/ beside the checkout (expected at {CONFORMANCE}), "
            "with a README.md saying where each file came from")


def in_ci() -> bool:
    """Whether this run is CI's: the ``CI`` environment variable is set to something non-empty."""
    return bool(os.environ.get("CI", "").strip())


def require(*paths: Path) -> Path:
    """Check that ``paths`` (default: the fixtures folder) exist and return the first; otherwise skip the test
    (fail it under CI) with a message naming every missing path."""
    paths = tuple(Path(p) for p in paths) or (CONFORMANCE,)
    missing = [p for p in paths if not p.exists()]
    if missing:
        message = f"missing {', '.join(str(p) for p in missing)}: {about()}"
        if in_ci():
            pytest.fail(f"{message}. CI={os.environ['CI']!r}: CI must provide the fixtures, so this fails "
                        "instead of skipping", pytrace=False)
        pytest.skip(message)
    return paths[0]


def needs(*paths: Path) -> pytest.MarkDecorator:
    """A mark for a test (or ``pytestmark`` for a module) that needs ``paths`` (default: the fixtures folder)."""
    return getattr(pytest.mark, MARKER)(*paths)
