"""The conformance-fixture guard (tests/conformance.py): a missing fixture skips a test on a developer machine and
fails it under CI, with a message naming the missing path; every conformance test goes through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import conformance, conftest

TESTS = Path(__file__).resolve().parent


def test_missing_fixture_fails_under_ci(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-conformance" / "amber"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        conformance.require(missing)
    assert str(missing) in str(failed.value) and "CI" in str(failed.value)


@pytest.mark.parametrize("ci", [None, "", "  "])
def test_missing_fixture_skips_outside_ci(tmp_path, monkeypatch, ci):
    missing = tmp_path / "no-such-conformance"
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        conformance.require(tmp_path, missing)
    message = str(skipped.value)
    assert str(missing) in message and str(tmp_path) + "," not in message  # names what is missing, only that
    assert "../shared/conformance" in message and str(conformance.CONFORMANCE) in message
    assert "official scorers' outputs" in message and "README.md" in message


def test_present_fixtures_pass_and_return_the_first(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (tmp_path / "a.json").write_text("{}")
    assert conformance.require(tmp_path / "a.json", tmp_path) == tmp_path / "a.json"


def test_default_is_the_shared_folder(monkeypatch):
    monkeypatch.setattr(conformance, "CONFORMANCE", Path("/nonexistent/shared/conformance"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/shared/conformance"):
        conformance.require()


class _Item:
    """Just enough of a pytest item for the setup hook: its markers."""

    def __init__(self, *marks):
        self.marks = [m.mark for m in marks]

    def iter_markers(self, name=None):
        return (m for m in self.marks if name is None or m.name == name)


def test_the_marker_is_applied_before_the_test(tmp_path, monkeypatch):
    missing = tmp_path / "gone"
    item = _Item(pytest.mark.slow, conformance.needs(tmp_path, missing))
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=re.escape(str(missing))):
        conftest.pytest_runtest_setup(item)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=re.escape(str(missing))):
        conftest.pytest_runtest_setup(item)
    conftest.pytest_runtest_setup(_Item(conformance.needs(tmp_path)))  # present: nothing happens


def test_every_conformance_test_goes_through_the_guard():
    """No test module finds the fixtures itself or skips on them with its own skipif."""
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'"shared"\s*/\s*"conformance"', text), f"{path.name}: use tests.conformance.CONFORMANCE"
        for skip in re.finditer(r"skipif\((.{0,300})", text, flags=re.S):
            assert "CONFORMANCE" not in skip.group(1) and "REAL_" not in skip.group(1), (
                f"{path.name}: skip on missing fixtures through tests.conformance (needs / require)")
