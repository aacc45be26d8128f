"""Project discovery and params handling."""

from dataclasses import dataclass

import pytest

from mdpo_pipeline.programs.pipeline.project import ConfigError, Project, build_config, find_project_root, load_params


@dataclass(frozen=True)
class _Cfg:
    n: int = 1
    sources: tuple[str, ...] = ()

    def __post_init__(self):
        if self.n < 0:
            raise ValueError("n must be >= 0")


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


def test_build_config_names_unknown_keys_and_converts_lists():
    cfg = build_config(_Cfg, {"n": 2, "sources": ["llava"]}, where="params.yaml:x")
    assert cfg == _Cfg(n=2, sources=("llava",))
    with pytest.raises(ConfigError, match=r"params.yaml:x: unknown key\(s\) \['m'\]"):
        build_config(_Cfg, {"m": 1}, where="params.yaml:x")
    with pytest.raises(ConfigError, match="params.yaml:x: n must be >= 0"):
        build_config(_Cfg, {"n": -1}, where="params.yaml:x")


def test_load_params_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        load_params(bad)


def test_paths_inside_the_root_are_kept_relative(tmp_path):
    proj = Project(_checkout(tmp_path).resolve())
    assert proj.path("data/x") == proj.root / "data/x"
    assert proj.rel(proj.root / "data" / "x") == "data/x"
    assert proj.rel("/elsewhere/y") == "/elsewhere/y"
