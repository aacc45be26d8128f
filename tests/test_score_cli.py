"""`mdpo score` scores answer files made anywhere, in the official layouts, with the official scorers reproduced:
the conformance fixtures' official numbers come out of the command, to the last digit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conformance import CONFORMANCE, needs

pytestmark = needs(CONFORMANCE / "amber", CONFORMANCE / "objhal", CONFORMANCE / "real", CONFORMANCE / "nltk_data")


def _score(tmp_path, *args: str) -> dict:
    out = tmp_path / "metrics.json"
    env = {**os.environ, "NLTK_DATA": str(CONFORMANCE / "nltk_data")}
    proc = subprocess.run([sys.executable, "-m", "mdpo_pipeline.cli", "score", *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def _official(name: str) -> dict:
    return json.loads((CONFORMANCE / name).read_text())


def test_amber_generative_and_discriminative_official(tmp_path):
    data = str(CONFORMANCE / "real" / "amber")
    gen = _score(tmp_path, "amber", "--answers", str(CONFORMANCE / "amber/generative_answers.json"), "--data", data)
    assert gen["mode"] == "official" and gen["generative"] == _official("amber/generative_official.json")["aggregate"]
    dis = _score(tmp_path, "amber", "--answers", str(CONFORMANCE / "amber/discriminative_answers.json"), "--data", data)
    want = _official("amber/discriminative_official.json")["aggregate"]
    assert {k: v for k, v in dis["discriminative"].items() if k != "counts"} == {
        k: v for k, v in want.items() if k != "counts"}


def test_object_halbench_official(tmp_path):
    got = _score(tmp_path, "object_halbench", "--answers", str(CONFORMANCE / "objhal/answers.jsonl"),
                 "--data", str(CONFORMANCE / "objhal/coco"),
                 "--synonyms", str(CONFORMANCE / "real/rlhf-v/eval/data/synonyms_refine.txt"))
    official = _official("objhal/chair_official.json")
    assert got["metrics"] == official["aggregate"] and got["summary"] == official["official_summary"]


def test_pope_and_bad_input(tmp_path):
    questions = tmp_path / "pope"
    questions.mkdir()
    rows = [{"question_id": i, "image": f"{i}.jpg", "text": "Is there a dog in the image?", "label": label}
            for i, label in enumerate(["yes", "yes", "no", "no"], start=1)]
    (questions / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": i, "text": t}) + "\n"
                               for i, t in enumerate(["Yes.", "No, there is not.", "No", "Yes"], start=1)))
    got = _score(tmp_path, "pope", "--answers", str(answers), "--data", str(questions), "--split", "random")
    assert got["metrics"] == {"Accuracy": 0.5, "Precision": 0.5, "Recall": 0.5, "F1 score": 0.5, "Yes ratio": 0.5}

    proc = subprocess.run([sys.executable, "-m", "mdpo_pipeline.cli", "score", "pope", "--answers", str(answers),
                           "--data", str(questions), "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert proc.returncode == 2 and "needs --split" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "mdpo_pipeline.cli", "score", "amber", "--answers", str(answers),
                           "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "nowhere" in proc.stderr and "AMBER" in proc.stderr


def test_mmhal_template_with_answers_offline(tmp_path):
    """MMHal's layout (the template with model_answer filled) scored by the ShapeWorld rule judge; official mode
    without the judge script says what it needs."""
    from mdpo_pipeline.shapeworld import ShapeWorldConfig
    from mdpo_pipeline.shapeworld.generate import _write_mmhal

    _write_mmhal(ShapeWorldConfig(mmhal=16, image_size=32), tmp_path / "mmhal", progress=False)
    records = json.loads((tmp_path / "mmhal" / "response_template.json").read_text())
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([r | {"model_answer": r["gt_answer"]} for r in records]))
    got = _score(tmp_path, "mmhal", "--answers", str(answers), "--mode", "offline")
    assert got["scores"]["n"] == 16 and got["scores"]["hallucination_rate"] == 0.0
    assert got["scores"]["judge"]["prompt"] == "shapeworld-rule"
    proc = subprocess.run([sys.executable, "-m", "mdpo_pipeline.cli", "score", "mmhal", "--answers", str(answers),
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--judge-script" in proc.stderr


def test_mmhal_official_through_a_loopback_judge(tmp_path):
    """The official prompt read from the judge script, sent to the OpenAI-compatible server named by
    MDPO_JUDGE_BASE_URL with the model of MDPO_JUDGE_MODEL (GPT-4 itself cannot run here)."""
    import threading
    from http.server import ThreadingHTTPServer

    from tests.test_real_benchmarks_e2e import _Judge

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    server.prompts = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    template = CONFORMANCE / "real/rlhf-v/eval/data/mmhal-bench_answer_template.json"
    records = json.loads(template.read_text())
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([r | {"model_answer": "A photo."} for r in records]))
    env = {**os.environ, "NLTK_DATA": str(CONFORMANCE / "nltk_data"), "OPENAI_API_KEY": "sk-test-not-a-secret",
           "MDPO_JUDGE_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}/v1", "MDPO_JUDGE_MODEL": "judge-env"}
    out = tmp_path / "metrics.json"
    try:
        proc = subprocess.run([sys.executable, "-m", "mdpo_pipeline.cli", "score", "mmhal", "--answers", str(answers),
                               "--judge-script", str(CONFORMANCE / "real/llava-rlhf/Eval/eval_gpt_mmhal.py"),
                               "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["scores"]["n"] == 96 and got["scores"]["judge"]["judge_model"] == "judge-env"
    assert got["scores"]["judge"]["prompt"] == "official" and len(server.prompts) == 96
    assert all("### Example 5:" in p and "A photo." in p for p in server.prompts)


def test_offline_mode_scores_the_same_files_with_the_rule_based_scorers(tmp_path):
    amber = _score(tmp_path, "amber", "--mode", "offline", "--answers",
                   str(CONFORMANCE / "amber/generative_answers.json"), "--data", str(CONFORMANCE / "real/amber"))
    assert amber["mode"] == "offline" and 0 < amber["generative"]["chair"] < 1
    chair = _score(tmp_path, "object_halbench", "--mode", "offline", "--answers",
                   str(CONFORMANCE / "objhal/answers.jsonl"), "--data", str(CONFORMANCE / "objhal/coco"),
                   "--synonyms", str(CONFORMANCE / "real/rlhf-v/eval/data/synonyms_refine.txt"))
    assert chair["mode"] == "offline" and set(chair["metrics"]) == {"CHAIRs", "CHAIRi", "obj_rec"}
