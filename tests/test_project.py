"""Project discovery and paths (params.yaml itself: tests/test_settings.py)."""

import pytest

from mdpo_pipeline.pipeline.project import ConfigError, Project, find_project_root


def _checkout(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text("a: {n: 1}\n")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    return tmp_path


def test_root_found_from_a_subdirectory(tmp_path, monkeypatch):
    monkeypatch.delenv("MDPO_PROJECT_ROOT", raising=False)
    root = _checkout(tmp_path)
    assert find_project_root(root / "sub" / "deeper") == root.resolve()


def test_env_var_wins_and_is_checked(tmp_path, monkeypatch):
    root = _checkout(tmp_path / "a")
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    assert find_project_root(tmp_path) == root.resolve()
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="has no params.yaml"):
        find_project_root()


def test_paths_inside_the_root_are_kept_relative(tmp_path):
    proj = Project(_checkout(tmp_path).resolve())
    assert proj.path("data/x") == proj.root / "data/x"
    assert proj.rel(proj.root / "data" / "x") == "data/x"
    assert proj.rel("/elsewhere/y") == "/elsewhere/y"
