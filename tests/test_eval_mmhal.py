"""MMHal-Bench: loading (the real 96 records too), the official judge prompt read from the user's copy of
the judge script, the rating parse rule and scoring (checked against the script's own code), the judge
identity kept with scores and cached judgments, and the ShapeWorld rule judge."""

from __future__ import annotations

import ast
import builtins
import contextlib
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mdpo_pipeline.core.eval.mmhal import (
    OWN_PROMPT,
    QUESTION_TYPES,
    JudgePrompt,
    MMHalFormatError,
    MMHalJudgeScriptError,
    MMHalRecord,
    ParsedRating,
    judge_prompt,
    load_judge_prompt,
    load_mmhal,
    mmhal_scores,
    parse_rating,
    read_official_template,
)
from mdpo_pipeline.shapeworld import (
    CATEGORIES,
    MMHAL_TYPES,
    ShapeWorldConfig,
    generate_benchmarks,
)
from mdpo_pipeline.shapeworld.judge import ShapeWorldJudge

from tests.conformance import CONFORMANCE, needs

#: Real benchmark files and the official judge scripts (see the conformance README's `real/` section); never copied
#: here.
REAL_TEMPLATE = CONFORMANCE / "real" / "rlhf-v" / "eval" / "data" / "mmhal-bench_answer_template.json"
JUDGE_SCRIPTS = {  # path -> the quote that opens and closes its `template` literal
    CONFORMANCE / "real" / "llava-rlhf" / "Eval" / "eval_gpt_mmhal.py": "'''",
    CONFORMANCE / "real" / "llava-rlhf" / "MMHal-Bench-eval" / "eval_gpt4.py": '"""',
}
JUDGE_SCRIPT = next(iter(JUDGE_SCRIPTS))
#: The template's sha256 as the conformance README states it.
OFFICIAL_SHA256 = "2c73d8c50f1740d000fae62cfeed103c2f7a5bcfa904b27e6e09900e7ce600cc"


#: Tests on the real MMHal files and judge scripts: they skip without them (fail under CI; tests/conformance.py).
needs_conformance = needs(REAL_TEMPLATE, *JUDGE_SCRIPTS)


@pytest.fixture(scope="module")
def conformance() -> Path:
    """The shared conformance folder (tests using it carry ``needs_conformance``)."""
    return CONFORMANCE


def _between_quotes(path: Path, quote: str) -> str:
    """The raw source text between ``template = <quote>`` and the next closing quote."""
    source = path.read_text(encoding="utf-8")
    return source.split(f"template = {quote}", 1)[1].split(quote, 1)[0]


SMALL = {"n_instructions": 8, "image_size": 32, "amber_generative": 4, "amber_discriminative": 8, "object_halbench": 2}


@pytest.fixture(scope="module")
def sw_bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    generate_benchmarks(ShapeWorldConfig(**SMALL), out)
    return out


@pytest.fixture(scope="module")
def sw_records(sw_bench) -> list[MMHalRecord]:
    return load_mmhal(sw_bench / "mmhal" / "response_template.json")


def _record(**overrides) -> dict:
    rec = {
        "question_type": "attribute",
        "question_topic": "round shapes",
        "image_id": "abc",
        "image_src": "https://example.invalid/mmhal/abc.jpg",
        "image_content": ["Ellipse", "Ring"],
        "question": "What colour is the ellipse in the image?",
        "gt_answer": "The ellipse is purple.",
        "model_answer": "",
    }
    return rec | overrides


# --- loading ---------------------------------------------------------------------------------------


def test_load_shapeworld_template(sw_records, tmp_path):
    assert len(sw_records) == 96
    assert [r.question_type for r in sw_records] == [QUESTION_TYPES[i % 8] for i in range(96)]
    assert QUESTION_TYPES == MMHAL_TYPES
    first = sw_records[0]
    assert first.image_file == f"{first.image_id}.jpg"
    assert all(isinstance(r.image_content, tuple) and r.image_content for r in sw_records)
    # as_dict is the file's record form; a folder path finds response_template.json in it
    (tmp_path / "response_template.json").write_text(json.dumps([first.as_dict()]))
    assert load_mmhal(tmp_path) == [first]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("gt_answer"), "record 1 lacks field(s) gt_answer"),
        (lambda r: (r.pop("question"), r.pop("image_id")), "record 1 lacks field(s) image_id, question"),
        (lambda r: r.update(image_content="Ellipse"), "record 1 field image_content must be a list of strings"),
        (lambda r: r.update(question=3), "record 1 field question must be a string"),
        (lambda r: r.update(question_type="colour"), "record 1 field question_type is 'colour'"),
        (lambda r: r.update(model_answer=["x"]), "record 1 field model_answer must be a string"),
    ],
)
def test_load_names_record_and_field(tmp_path, mutate, message):
    bad = _record()
    mutate(bad)
    path = tmp_path / "response_template.json"
    path.write_text(json.dumps([_record(), bad]))
    with pytest.raises(MMHalFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_mmhal(path)


def test_load_rejects_non_list_and_bad_json(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(MMHalFormatError, match="expected a JSON list"):
        load_mmhal(path)
    path.write_text("[1,")
    with pytest.raises(MMHalFormatError, match="not valid JSON"):
        load_mmhal(path)
    path.write_text(json.dumps([_record(), "x"]))
    with pytest.raises(MMHalFormatError, match="record 1 is a str"):
        load_mmhal(path)


@needs_conformance
def test_load_real_template(conformance):
    """The real MMHal-Bench file (RLHF-V's copy): 96 records, the 8 types in their repeating order, every field."""
    records = load_mmhal(REAL_TEMPLATE)
    rows = json.loads(REAL_TEMPLATE.read_text(encoding="utf-8"))
    assert len(records) == len(rows) == 96
    assert [r.question_type for r in records] == [QUESTION_TYPES[i % 8] for i in range(96)]
    fields = {"question_type", "question_topic", "image_id", "image_src", "image_content", "question", "gt_answer",
              "model_answer"}
    for rec, row in zip(records, rows):
        assert set(row) == fields
        assert rec.as_dict() == row
        assert rec.image_content and rec.question and rec.gt_answer and rec.image_src.startswith("https://")
        assert rec.model_answer == ""
    assert records[2].image_content == ("Vase", "Houseplant", "Stool", "Coffee table", "Flower")
    assert records[0].image_file == "7206072054_c53d53b97d_o.jpg"


def test_load_missing_file_names_it_and_its_source(tmp_path):
    missing = tmp_path / "mmhal-bench" / "response_template.json"
    with pytest.raises(FileNotFoundError) as info:
        load_mmhal(missing)
    for part in (f"{missing} not found", "Shengcao1006/MMHal-Bench", "mmhal-bench_answer_template.json"):
        assert part in str(info.value)
    # A folder without the file names the file it looked for.
    with pytest.raises(FileNotFoundError, match="response_template.json not found"):
        load_mmhal(tmp_path)


def test_model_answer_is_optional(tmp_path):
    rec = _record()
    del rec["model_answer"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps([rec]))
    assert load_mmhal(path)[0].model_answer == ""


# --- prompt ----------------------------------------------------------------------------------------


def test_judge_prompt_structure():
    prompt = judge_prompt(_record(image_content=["Ellipse", "Half moon"]), "It is purple.")
    sections = ["### Image Contents", "### Question", "### Standard Human-Generated Answer",
                "### LMM Response to Evaluate"]
    positions = [prompt.index(s) for s in sections]
    assert positions == sorted(positions)
    assert "### Image Contents\nEllipse, Half moon\n" in prompt
    assert "### Question\nWhat colour is the ellipse in the image?\n" in prompt
    assert "### Standard Human-Generated Answer\nThe ellipse is purple.\n" in prompt
    assert prompt.endswith("### LMM Response to Evaluate\nIt is purple.\n")
    instructions = prompt[: positions[0]]
    for s, meaning in [(6, "very informative, with good analysis or reasoning, and no hallucination"),
                       (5, "very informative, no hallucination"), (4, "somewhat informative, no hallucination"),
                       (3, "not informative, no hallucination"), (2, "very informative, but with hallucination"),
                       (1, "somewhat informative, with hallucination"), (0, "not informative, with hallucination")]:
        assert f"\n{s}: {meaning}\n" in instructions + "\n"
    assert '"Rating: s"' in instructions
    # The record dataclass works as well as the raw dict.
    assert judge_prompt(load_like(_record()), "x") == judge_prompt(_record(), "x")


def load_like(rec: dict) -> MMHalRecord:
    return MMHalRecord(**{**rec, "image_content": tuple(rec["image_content"])})


def test_own_prompt_is_a_labelled_fallback(caplog):
    prompt = load_judge_prompt(None)
    assert prompt is OWN_PROMPT and prompt.kind == "own" and not prompt.official
    assert "NOT the official MMHal prompt" in caplog.text
    assert prompt.label.startswith(f"own prompt, NOT the official MMHal prompt (sha256 {prompt.sha256[:12]})")
    sha = hashlib.sha256(prompt.template.encode()).hexdigest()
    assert prompt.identity() == {"prompt": "own", "prompt_sha256": sha, "judge_script": None}
    assert prompt.sha256 != OFFICIAL_SHA256
    assert prompt.build(_record(), "x") == judge_prompt(_record(), "x")
    with pytest.raises(ValueError, match="prompt kind 'paraphrase'"):
        JudgePrompt("paraphrase", OWN_PROMPT.template)


@pytest.mark.parametrize("script", list(JUDGE_SCRIPTS), ids=lambda p: p.name)
@needs_conformance
def test_official_template_is_the_scripts_text_byte_for_byte(conformance, script):
    text = read_official_template(script)
    assert text.encode("utf-8") == _between_quotes(script, JUDGE_SCRIPTS[script]).encode("utf-8")
    assert len(text) == 6631
    assert [text.count(f"### Example {i}:") for i in range(1, 6)] == [1] * 5 and text.count("### Example") == 5
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == OFFICIAL_SHA256
    prompt = load_judge_prompt(script)
    assert (prompt.kind, prompt.official, prompt.template, prompt.source) == ("official", True, text, str(script))
    assert prompt.identity() == {"prompt": "official", "prompt_sha256": OFFICIAL_SHA256, "judge_script": str(script)}
    assert prompt.label == f"official MMHal-Bench judge prompt (sha256 {OFFICIAL_SHA256[:12]}, from {script})"


@needs_conformance
def test_official_prompt_for_a_real_record(conformance):
    record = load_mmhal(REAL_TEMPLATE)[2]
    answer = "The stool on the left holds the vase with the red flower {and nothing else}."
    raw = _between_quotes(JUDGE_SCRIPT, JUDGE_SCRIPTS[JUDGE_SCRIPT])
    instructions = raw[: raw.index("### Image Contents\n{}")]
    # Written by hand from the script's call template.format(', '.join(record['image_content']),
    # record['question'], record['gt_answer'], record['model_answer']) with the graded answer last.
    expected = instructions + (
        "### Image Contents\n"
        "Vase, Houseplant, Stool, Coffee table, Flower\n"
        "\n"
        "### Question\n"
        "Which wooden stool has a vase with red flower on it?\n"
        "\n"
        "### Standard Human-Generated Answer\n"
        "The left wooden stool has a vase with a red flower on it.\n"
        "\n"
        "### LMM Response to Evaluate\n"
        "The stool on the left holds the vase with the red flower {and nothing else}.\n"
    )
    official = load_judge_prompt(JUDGE_SCRIPT)
    assert official.build(record, answer) == expected
    assert official.build(record.as_dict(), answer) == expected
    # One image label: no separator at all.
    one = load_mmhal(REAL_TEMPLATE)[0]
    assert "### Image Contents\nFire hydrant\n\n### Question\n" in official.build(one, "x")


def test_judge_script_errors_name_the_file_and_its_source(tmp_path):
    missing = tmp_path / "LLaVA-RLHF" / "Eval" / "eval_gpt_mmhal.py"
    with pytest.raises(MMHalJudgeScriptError) as info:
        load_judge_prompt(missing)
    for part in (f"{missing} not found", "llava-rlhf/LLaVA-RLHF", "Eval/eval_gpt_mmhal.py"):
        assert part in str(info.value)
    q3 = "'" * 3
    cases = {
        "no_template": ("prompt = 'a {} {} {} {}'\n", "has no module-level `template = "),
        "only_in_main": ("if __name__ == '__main__':\n    template = 'a {} {} {} {}'\n", "has no module-level"),
        "f_string": ("x = 1\ntemplate = f'{x} {{}}'\n", "line 2 binds `template` to something other than a string"),
        "appended": ("template = 'a {} {} {} {}'\ntemplate += '{}'\n", "line 2 binds `template`"),
        "syntax": (f"template = {q3}never closed\n", "is not Python source"),
        "two_fields": ("template = 'only {} and {}'\n", "has 2 replacement field(s)"),
        "named_field": ("template = '{name} {} {} {}'\n", "expected four plain {}"),
        "bad_braces": ("template = 'a } {} {} {} {}'\n", "is not a format string"),
    }
    for name, (source, message) in cases.items():
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        with pytest.raises(MMHalJudgeScriptError) as info:
            load_judge_prompt(path)
        assert message in str(info.value) and str(path) in str(info.value), (name, str(info.value))
        assert "llava-rlhf/LLaVA-RLHF, Eval/eval_gpt_mmhal.py" in str(info.value), name


def test_judge_script_is_read_not_run(tmp_path):
    ran = tmp_path / "ran"
    script = tmp_path / "eval_gpt_mmhal.py"
    script.write_text(
        "import pathlib\n"
        f"pathlib.Path({str(ran)!r}).write_text('x')\n"
        "template = 'old {} {} {} {}'\n"
        "raise SystemExit(3)\n"
        "template = ('C: {}\\n' 'Q: {}\\n'  # implicit concatenation is one literal\n"
        "            'H: {}\\nR: {}\\n')\n"
    )
    prompt = load_judge_prompt(script)
    assert not ran.exists()
    # The last module-level binding counts, as when the script runs.
    assert prompt.build(_record(image_content=["A", "B"]), "ans") == (
        "C: A, B\nQ: What colour is the ellipse in the image?\nH: The ellipse is purple.\nR: ans\n")


# --- parse rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, rating, parsed",
    [
        ("The answer is fine.", 0, False),  # no rating at all
        ("Rating: 5", 5, True),  # lower-cased before matching
        ("Short explanation.\nrating: 0", 0, True),  # a real 0, parsed
        ("rating: 2 ... on reflection, rating: 4", 0, False),  # two different ratings
        ("rating: 7", 0, False),  # outside 0..6: nothing found
        ("rating: 10", 1, True),  # the benchmark's substring rule reads "rating: 1" inside it
        ("Rating: 3. To repeat, rating: 3.", 3, True),  # the same rating twice is one distinct rating
        ("Rating:5", 0, False),  # the space is part of the pattern
        ("Rating: five", 0, False),
        ("RATING: 6 (very informative)", 6, True),
        ("", 0, False),
    ],
)
def test_parse_rating(text, rating, parsed):
    got = parse_rating(text)
    assert (got.rating, got.parsed) == (rating, parsed)
    assert bool(got.problem) == (not parsed)


#: Judge outputs that exercise every branch of the official parse rule.
TRICKY_OUTPUTS = [
    "The answer is accurate and detailed.\nRating: 6",
    "Explanation: the colour is wrong.\nrating: 2",
    "RATING: 5, very informative",
    "Rating: 3. To repeat, rating: 3.",
    "Rating: 10",  # "rating: 1" is a substring
    "Rating:4",  # no space: no rating
    "rating: 2 ... on reflection, rating: 4",  # two ratings
    "- Rating: 6, very informative\n- Rating: 5\n- Rating: 4\n- Rating: 3\n- Rating: 2\n- Rating: 1\n- Rating: 0",
    "",
    "Rating: 0",
    "I would give it a rating: 4 overall.",
    "Rating: 1 (somewhat informative, with hallucination)",
    "Rating: 7",
]


def _official_scoring(script: Path):
    """The official script's parse-and-score code (its main block from ``scores = []`` on), compiled from the
    user's copy for comparison; nothing of the script is imported or carried here."""
    tree = ast.parse(script.read_bytes())
    main = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))
    start = next(i for i, n in enumerate(main.body) if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "scores" for t in n.targets))
    return compile(ast.Module(body=main.body[start:], type_ignores=[]), str(script), "exec")


@pytest.mark.parametrize("script", list(JUDGE_SCRIPTS), ids=lambda p: p.name)
@needs_conformance
def test_parse_and_scores_match_the_official_code(conformance, script):
    outputs = [TRICKY_OUTPUTS[(5 * i) % len(TRICKY_OUTPUTS)] for i in range(96)]
    namespace = {"__builtins__": builtins,
                 "responses": [{"choices": [{"message": {"content": t}}]} for t in outputs]}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(_official_scoring(script), namespace)
    ratings = [parse_rating(t) for t in outputs]
    assert [r.rating for r in ratings] == namespace["scores"]
    ours = mmhal_scores(ratings, [QUESTION_TYPES[i % 8] for i in range(96)])
    assert ours.score == sum(namespace["scores"]) / 96
    assert ours.hallucination_rate == sum(namespace["hallucination"]) / 96
    assert list(ours.per_type.values()) == [sum(v) / len(v) for v in namespace["scores_each"]]
    assert ours.official_summary() == "\n".join(printed.getvalue().splitlines()[-3:])
    assert ours.n_unparsed == printed.getvalue().count("Warning: multiple or zero scores found") > 0


def test_parse_rating_reports_problem(caplog):
    got = parse_rating("rating: 2 and rating: 4")
    assert got.problem == "several ratings: 2, 4"
    assert parse_rating("nothing").problem == "no rating"
    assert "unparseable judge output" in caplog.text


# --- scores ----------------------------------------------------------------------------------------

#: 16 records, two per type in the benchmark's order (record i has type i % 8); record 9's judge
#: output has no rating, so it counts as 0 and as unparsed.
FIXTURE_OUTPUTS = [
    "Rating: 6", "rating: 2", "Rating: 5", "Rating: 0", "Rating: 4", "Rating: 3", "Rating: 1", "Rating: 6",
    "Rating: 4", "I cannot rate this.", "Rating: 5", "Rating: 3", "Rating: 2", "Rating: 6", "Rating: 3", "Rating: 0",
]


def test_scores_hand_worked():
    """Ratings 6 2 5 0 4 3 1 6 | 4 0 5 3 2 6 3 0 (record 9 unparsed -> 0).

    score = (27 + 23) / 16 = 3.125
    hallucination rate = #(s < 3) / 16 = #{2, 0, 1, 0, 2, 0} / 16 = 6/16 = 0.375
    per type (records i and i + 8): attribute (6+4)/2 = 5.0, adversarial (2+0)/2 = 1.0,
    comparison (5+5)/2 = 5.0, counting (0+3)/2 = 1.5, relation (4+2)/2 = 3.0,
    environment (3+6)/2 = 4.5, holistic (1+3)/2 = 2.0, other (6+0)/2 = 3.0; n_unparsed = 1.
    """
    ratings = [parse_rating(t) for t in FIXTURE_OUTPUTS]
    expected_per_type = {"attribute": 5.0, "adversarial": 1.0, "comparison": 5.0, "counting": 1.5,
                         "relation": 3.0, "environment": 4.5, "holistic": 2.0, "other": 3.0}
    for types in (None, [QUESTION_TYPES[i % 8] for i in range(16)]):
        s = mmhal_scores(ratings, types)
        assert s.n == 16
        assert s.score == pytest.approx(3.125)
        assert s.hallucination_rate == pytest.approx(0.375)
        assert s.per_type == pytest.approx(expected_per_type)
        assert list(s.per_type) == list(QUESTION_TYPES)
        assert s.per_type_n == {t: 2 for t in QUESTION_TYPES}
        assert s.n_unparsed == 1
    d = s.as_dict()
    assert d["score"] == pytest.approx(3.125) and d["n_unparsed"] == 1
    # Plain ints and None (unparsed) give the same result.
    plain = [None if not r.parsed else r.rating for r in ratings]
    assert mmhal_scores(plain) == s


def test_scores_type_consistency():
    types = [QUESTION_TYPES[i % 8] for i in range(16)]
    types[3], types[4] = types[4], types[3]
    with pytest.raises(ValueError, match="record 3 has question_type 'relation'.*i % 8 = 3.*'counting'"):
        mmhal_scores([3] * 16, types)
    # Grouping by the records' own types on request (a reordered subset, say).
    s = mmhal_scores([0, 6], ["holistic", "holistic"], require_order=False)
    assert s.per_type["holistic"] == 3.0 and s.per_type["attribute"] is None and s.per_type_n["holistic"] == 2
    with pytest.raises(ValueError, match="2 ratings but 1 question types"):
        mmhal_scores([1, 2], ["attribute"])
    with pytest.raises(ValueError, match="rating 1 is 7"):
        mmhal_scores([1, 7])
    with pytest.raises(ValueError, match="no ratings"):
        mmhal_scores([])
    with pytest.raises(ValueError, match="not one of"):
        mmhal_scores([1], ["colour"])


def test_scores_keep_the_judge_identity():
    judge = {"judge_model": "gpt-4-0613", "prompt": "official", "prompt_sha256": OFFICIAL_SHA256,
             "judge_script": "/x/eval_gpt_mmhal.py"}
    s = mmhal_scores([6, 2], judge=judge)
    assert s.judge == judge and s.as_dict()["judge"] == judge
    assert mmhal_scores([6, 2]).judge is None


def test_official_summary_rounds_as_the_script_prints():
    s = mmhal_scores([6, 5, 4, 3, 2, 1, 0, 6, 5])
    assert s.official_summary() == (
        "Average score: 3.56\nHallucination rate: 0.33\n"
        "Average score for each question type: 5.5,5.0,4.0,3.0,2.0,1.0,0.0,6.0"
    )
    assert mmhal_scores([6]).official_summary().endswith(": 6.0,n/a,n/a,n/a,n/a,n/a,n/a,n/a")


def test_parsed_rating_counts_as_unparsed_only_when_flagged():
    s = mmhal_scores([ParsedRating(0, True), ParsedRating(0, False, "no rating")])
    assert s.n_unparsed == 1 and s.score == 0.0 and s.hallucination_rate == 1.0


# --- ShapeWorld judge ------------------------------------------------------------------------------


def _absent(rec: MMHalRecord, avoid: str = "") -> str:
    present = {c.lower() for c in rec.image_content}
    return next(c for c in CATEGORIES if c not in present and c not in avoid)


def test_shapeworld_judge_is_labelled_not_comparable():
    judge = ShapeWorldJudge()
    assert ShapeWorldJudge.comparable_with_gpt4 is False
    assert "NOT comparable" in judge.note and "GPT-4" in judge.note
    assert judge.model == "shapeworld-rules-v1"


def test_shapeworld_judge_ground_truth_rates_high(sw_records):
    judge = ShapeWorldJudge()
    for i, rec in enumerate(sw_records):
        text = judge.judge(rec, rec.gt_answer)
        got = parse_rating(text)
        assert got.parsed, text
        assert got.rating >= 3, (i, rec.question, rec.gt_answer, text)
        assert got.rating == judge.verdict(rec, rec.gt_answer).rating
    # The reference answers are complete and correct: the top of the scale.
    assert {judge.verdict(r, r.gt_answer).rating for r in sw_records} == {6}


def test_shapeworld_judge_absent_object_rates_low(sw_records):
    judge = ShapeWorldJudge()
    for i, rec in enumerate(sw_records):
        absent = _absent(rec, avoid=rec.question)
        for answer in (f"{rec.gt_answer} There is also a {absent} in the image.", f"I can see a {absent}."):
            v = judge.verdict(rec, answer)
            assert v.rating < 3, (i, rec.question, answer, v)
            assert absent in v.hallucinated_objects
            assert v.hallucinates
    # Answering the adversarial question as if its absent object were there is a hallucination too.
    for rec in sw_records[1::8]:
        asked_absent = next(c for c in CATEGORIES if f"the {c} next" in rec.question)
        v = judge.verdict(rec, f"The {asked_absent} is red.")
        assert v.rating == 0 and v.key == "wrong" and v.hallucinated_objects == (asked_absent,)


@pytest.mark.parametrize(
    "record, answer, rating",
    [
        (_record(), "The ellipse in the image is purple.", 6),  # correct and complete
        (_record(), "Purple.", 5),  # correct but terse
        (_record(image_content=["Ellipse", "Half moon", "Heart"], question_type="holistic",
                 question="Describe the image in detail.",
                 gt_answer="The image shows a medium white ellipse at the top left, a medium red heart on the "
                           "right, a small blue half moon at the bottom left, all drawn flat on a dark grey "
                           "textured background."),
         "I see an ellipse and a heart.", 4),  # partly informative
        (_record(), "I am not sure.", 3),  # not informative, nothing false
        (_record(), "The ellipse is purple, next to a green star.", 2),  # correct but names an absent star
        (_record(image_content=["Ellipse", "Half moon", "Heart"], question_type="holistic",
                 question="Describe the image in detail.",
                 gt_answer="The image shows a medium white ellipse at the top left, a medium red heart on the "
                           "right, a small blue half moon at the bottom left, all drawn flat on a dark grey "
                           "textured background."),
         "An ellipse and a star.", 1),  # partial with an absent star
        (_record(), "The ellipse is red.", 0),  # the main claim is wrong
        (_record(question_type="counting", image_content=["Circle", "Half moon"],
                 question="How many half moons are there in the image?",
                 gt_answer="There are two half moons in the image."), "There are three crescents.", 0),
        (_record(question_type="relation", image_content=["Circle", "Half moon", "Ring"],
                 question="Where is the ring relative to the half moon?",
                 gt_answer="The ring is directly above the half moon."), "The half moon is below the ring.", 6),
        (_record(question_type="comparison", image_content=["Circle", "Heart"],
                 question="Which is larger, the heart or the circle?",
                 gt_answer="The circle is larger than the heart."), "The heart is larger than the circle.", 0),
        (_record(question_type="adversarial", image_content=["Circle", "Heart"],
                 question="What colour is the arrow next to the heart?",
                 gt_answer="There is no arrow in the image; it only shows circle and heart."),
         "There is no arrow in this image, only a circle and a heart.", 6),
    ],
)
def test_shapeworld_judge_scale(record, answer, rating):
    v = ShapeWorldJudge().verdict(record, answer)
    assert v.rating == rating, v
    assert v.as_dict()["hallucinates"] == (rating < 3)


def test_shapeworld_judge_rejects_non_shapeworld_records():
    with pytest.raises(ValueError, match="not a ShapeWorld record.*'Dog'"):
        ShapeWorldJudge().verdict(_record(image_content=["Dog", "Ring"]), "A dog.")


def test_generated_split_loads_from_its_folder_with_every_image(tmp_path):
    """The generator's MMHal split loads from its folder (as a real download would) and names existing images."""
    generate_benchmarks(ShapeWorldConfig(**SMALL), tmp_path)
    path = tmp_path / "mmhal"
    records = load_mmhal(path)
    assert len(records) % 8 == 0 and len(records) > 0
    assert all((path / "images" / r.image_file).exists() for r in records)


def test_mmhal_module_imports_no_shapeworld():
    code = "import sys, mdpo_pipeline.core.eval.mmhal\nprint(sorted(m for m in sys.modules if 'shapeworld' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the evaluation stage's MMHal step: prompt identity in scores, label and cache -------------------


class FakeChatJudge:
    """Stands in for the chat client: records the prompts and answers with a rating derived from each."""

    model = "judge-test"
    temperature = 0.0

    def __init__(self):
        self.prompts: list[str] = []

    def complete(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return f"Explanation.\nRating: {len(prompt) % 7}"


def _answer(i: int | str) -> str:
    return f"Answer {i}: a red flower on the left stool."


def _run_mmhal(root: Path, monkeypatch, mmhal: dict, judge_settings: dict | None = None):
    """The MMHal benchmark as the stage runs it (prepare, answer, score) with canned answers (no model) and,
    unless judge_settings is given, FakeChatJudge."""
    from mdpo_pipeline.evaluation import benchmarks
    from mdpo_pipeline.evaluation.benchmarks import EvalContext, MMHal

    fake, generated = FakeChatJudge(), []
    if judge_settings is None:
        monkeypatch.setattr(benchmarks, "make_judge", lambda settings, rule_judge=None, rule_by_default=False: (fake, "judge-test via http://test"))
    from mdpo_pipeline.core.typed import build
    from mdpo_pipeline.core.eval.settings import EvalSettings

    settings = build(EvalSettings, {"root": "benchmarks", "mmhal": mmhal, "max_items": {"mmhal": 16}}, "test")
    ctx = EvalContext(root, settings, judge_settings, rule_judge=ShapeWorldJudge)
    _run_mmhal.generated = generated
    state, prompts = MMHal().prepare(ctx)
    generated.append(len(prompts))
    scored = MMHal().score(ctx, state, {p.id: _answer(p.id) for p in prompts})
    return scored.result, scored.label, fake


def _cache_rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "artifacts/eval/judgments.jsonl").read_text().splitlines()]


@needs_conformance
def test_mmhal_stage_keeps_the_official_prompt_identity(conformance, tmp_path, monkeypatch):
    mmhal = {"path": str(REAL_TEMPLATE), "judge_script": str(JUDGE_SCRIPT)}
    scores, label, fake = _run_mmhal(tmp_path, monkeypatch, mmhal)
    identity = {"judge_model": "judge-test", "prompt": "official", "prompt_sha256": OFFICIAL_SHA256,
                "judge_script": str(JUDGE_SCRIPT)}
    assert scores.n == 16
    assert scores.judge == identity and scores.as_dict()["judge"] == identity  # -> scores.json's mmhal section
    assert label == (f"judge-test via http://test; official MMHal-Bench judge prompt (sha256 {OFFICIAL_SHA256[:12]}, "
                     f"from {JUDGE_SCRIPT})")
    official = load_judge_prompt(JUDGE_SCRIPT)
    assert fake.prompts == [official.build(r, _answer(i)) for i, r in enumerate(load_mmhal(REAL_TEMPLATE)[:16])]
    rows = _cache_rows(tmp_path)
    assert len(rows) == 16 and {r["template_sha256"] for r in rows} == {OFFICIAL_SHA256}
    assert {r["model"] for r in rows} == {"judge-test"}
    # A rerun reuses every cached judgment.
    again, _, fake2 = _run_mmhal(tmp_path, monkeypatch, mmhal)
    assert fake2.prompts == [] and again == scores


def test_mmhal_stage_labels_the_own_prompt(tmp_path, monkeypatch):
    path = tmp_path / "mmhal-bench" / "response_template.json"
    path.parent.mkdir()
    path.write_text(json.dumps([_record(question_type=t) for t in QUESTION_TYPES]))
    scores, label, fake = _run_mmhal(tmp_path, monkeypatch, {"path": str(path.parent)})
    assert scores.judge == {"judge_model": "judge-test", "prompt": "own", "prompt_sha256": OWN_PROMPT.sha256,
                            "judge_script": None}
    assert "; own prompt, NOT the official MMHal prompt (sha256 " in label
    assert fake.prompts[0] == judge_prompt(_record(), _answer(0))
    assert {r["template_sha256"] for r in _cache_rows(tmp_path)} == {OWN_PROMPT.sha256}


def test_mmhal_stage_stops_on_a_bad_judge_script(tmp_path, monkeypatch):
    from mdpo_pipeline.pipeline.project import ConfigError

    path = tmp_path / "response_template.json"
    path.write_text(json.dumps([_record()]))
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "not_the_script.py").write_text("print('hello')\n")
    for setting, problem in [("judge/eval_gpt_mmhal.py", "not found"), ("judge/not_the_script.py", "no module-level")]:
        with pytest.raises(ConfigError) as info:
            _run_mmhal(tmp_path, monkeypatch, {"path": str(path), "judge_script": setting})
        message = str(info.value)
        for part in ("params.yaml:benchmark_scores.mmhal.judge_script", f"{tmp_path / setting}", problem,
                     "llava-rlhf/LLaVA-RLHF, Eval/eval_gpt_mmhal.py"):
            assert part in message
        assert _run_mmhal.generated == []  # stopped before generating any answer


def test_mmhal_stage_rule_judge_identity(sw_bench, tmp_path, monkeypatch):
    mmhal = {"path": str(sw_bench / "mmhal")}
    scores, label, _ = _run_mmhal(tmp_path, monkeypatch, mmhal, judge_settings={"kind": "shapeworld"})
    assert scores.judge == {"judge_model": "shapeworld-rules-v1", "prompt": "shapeworld-rule", "prompt_sha256": None,
                            "judge_script": None}
    assert "NOT comparable with GPT-4" in label and not (tmp_path / "artifacts/eval/judgments.jsonl").exists()
    # A configured script is still checked, before any answer is generated.
    with pytest.raises(ValueError, match="judge_script.*not found"):
        _run_mmhal(tmp_path, monkeypatch, mmhal | {"judge_script": "nowhere.py"}, judge_settings={"kind": "shapeworld"})
    assert _run_mmhal.generated == []
