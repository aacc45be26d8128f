"""A hostile params.yaml is refused quickly, naming the file and the limit (core/yamlfile.py), and an error about a
bad value quotes a bounded prefix of it (core/errors.shown), however large the value."""

from __future__ import annotations

import time

import pytest
import yaml

from mdpo_pipeline.core.errors import SHOWN_CHARS, clip, shown
from mdpo_pipeline.core.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_VALUES, read_yaml
from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.pipeline.settings import load_settings, parse_settings, read_params
from tests.conftest import REPO

#: Nine levels of nine aliases of the level below: 9**9 (387 million) values once expanded, in 300 bytes.
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))

#: Short enough for a terminal line or three: the key, what is expected (the known names, say), a prefix of the value.
SHORT = 500


def _project(tmp_path, text: str) -> Project:
    (tmp_path / "params.yaml").write_text(text)
    return Project(tmp_path)


def test_an_alias_bomb_is_refused_in_under_a_second(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 400
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        load_settings(_project(tmp_path, BILLION_LAUGHS))
    assert time.monotonic() - start < 1.0
    assert str(e.value).startswith(f"{path}: it holds more than {MAX_VALUES} values (YAML aliases expanded)")
    assert "billion laughs" in str(e.value)


def test_aliases_within_the_limit_still_work(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base: &n {n: 3, seed: 1}\npreference_pairs: *n\nother: [*n, *n]\n")
    assert read_yaml(path) == {"base": {"n": 3, "seed": 1}, "preference_pairs": {"n": 3, "seed": 1},
                               "other": [{"n": 3, "seed": 1}] * 2}
    assert read_params(REPO / "params.yaml") == yaml.safe_load((REPO / "params.yaml").read_text())


def test_a_flat_list_past_the_limit_is_refused_too(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("x: [" + "1, " * 20_000 + "]\n")  # 60 KB, within the size limit
    with pytest.raises(ConfigError, match=f"more than {MAX_VALUES} values"):
        read_yaml(path)


@pytest.mark.parametrize(("text", "message"), [
    ("a: &a [1, *a]\n", "the alias *a refers to a value that contains it (a cycle)"),
    ("x: " + "[" * 200 + "]" * 200 + "\n", f"values nest more than {MAX_DEPTH} levels deep"),
    ("x: " + "9" * 5000 + "\n", "a value YAML cannot read (Exceeds the limit (4300 digits)"),
    ("x: *nowhere\n", "not valid YAML: found undefined alias 'nowhere'"),
])
def test_cycles_depth_and_unreadable_values_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_params(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert len(str(e.value)) < SHORT + len(str(path))


def test_a_file_past_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("x: " + "a" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match=f"params.yaml: larger than {MAX_BYTES} bytes, the limit for a settings"):
        read_params(path)
    with pytest.raises(ConfigError, match="params file not found"):
        read_params(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot be read"):
        read_params(tmp_path)  # a directory


def test_shown_quotes_a_bounded_prefix():
    assert shown("abc") == "'abc'" and shown(5) == "5" and shown(None) == "None"
    big = "x" * 1_000_000
    assert shown(big) == "'" + "x" * SHOWN_CHARS + "'... (1000000 characters)"
    assert len(shown([big] * 1000)) <= SHOWN_CHARS + 3 and len(shown({big: [big]})) <= SHOWN_CHARS + 3
    assert shown(10**5000) == "<int too large to print>"
    assert len(shown("\x00" * 1000)) < 2 * SHOWN_CHARS  # escapes are cut too
    assert clip("short") == "short" and clip("y" * 1000, 10) == "yyyyyyyyyy... (1000 characters)"


@pytest.mark.parametrize("section", [
    {"preference_pairs": {"n": "9" * 200_000}},  # wrong type (a string)
    {"preference_pairs": {"strategy": "s" * 200_000}},  # right type, refused by the section's own check
    {"corrupted_images": {"seed": ["s" * 60_000] * 3}},
    {"shapeworld": {"k" * 200_000: 1}},  # an unknown key
    {"experiment": {"name": "/" * 200_000}},
    {"base_model": {"preset": "p" * 200_000}},
    {"training": {"methods": {"m" * 200_000: {}}}},
])
def test_a_huge_value_gives_a_short_error(tmp_path, section):
    """Each case is under the size limit, so the value reaches the settings and is refused there, quoting a
    prefix of it."""
    from mdpo_pipeline.pipeline.validate import validate_params

    project = _project(tmp_path, yaml.safe_dump(section, width=10**9))
    with pytest.raises(ConfigError) as e:
        validate_params(project)
    message = str(e.value)
    assert len(message) < SHORT, message[:SHORT]
    value = _leaves(section)[0]
    assert value[:20] in message and value[: SHOWN_CHARS + 1] not in message  # a prefix, no more


def _leaves(tree):
    """The strings of a params mapping (keys and values), longest first."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(k)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            found.append(node)

    walk(tree)
    return sorted(found, key=len, reverse=True)


def test_a_huge_value_of_a_training_setting_gives_a_short_error():
    """Training values are typed against TRL's MDPOConfig, whose own checks quote the value whole."""
    from mdpo_pipeline.pipeline.train import training_run_config

    settings = parse_settings({"training": {"lr_scheduler_type": "z" * 1_000_000}})
    fixed = {"method": "dpo", "output_dir": "o", "pairs_dir": "p", "image_root": "i", "corrupted_dir": "c",
             "base_model": "shapeworld-tiny", "max_length": 64}
    with pytest.raises(ConfigError) as e:
        training_run_config(settings, "dpo", fixed)
    assert str(e.value).startswith("params.yaml:training (method dpo): ") and len(str(e.value)) < SHORT + 100
