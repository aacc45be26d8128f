"""The real benchmark files through the Dagster asset: AMBER's release and Object HalBench (RLHF-V's question
layout with embedded images, COCO train+val annotations, RLHF-V's synonyms) scored in official mode, MMHal-Bench's
96-record template judged with the official prompt read from the judge script by a loopback OpenAI-compatible
judge (the one part that cannot run here: GPT-4). Capped with max_items; stand-in images where the release has
none here."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from PIL import Image

from mdpo_pipeline.defs.assets.data import data_assets
from mdpo_pipeline.defs.assets.evaluation import evaluation_assets, evaluation_checks
from mdpo_pipeline.defs.assets.training import training_assets
from mdpo_pipeline.defs.resources import JudgeResource
from tests.conformance import CONFORMANCE, needs
from tests.conftest import pipeline_resources, project_from_base

REAL = CONFORMANCE / "real"
pytestmark = [pytest.mark.slow, needs(REAL, CONFORMANCE / "objhal", CONFORMANCE / "nltk_data")]


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint answering every judge prompt with a rating derived from it."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        self.server.prompts.append(prompt)
        reply = {"choices": [{"message": {"role": "assistant", "content": f"Fine.\nRating: {len(prompt) % 7}"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    httpd.prompts = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_real_files_score_through_the_asset(shapeworld_base, tmp_path, monkeypatch, judge_server):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(CONFORMANCE / "nltk_data"), *nltk.data.path])
    # RLHF-V's question file: image_id, question and the picture as base64 (stand-in pixels here).
    answers = [json.loads(line) for line in (CONFORMANCE / "objhal/answers.jsonl").read_text().splitlines()][:4]
    questions = tmp_path / "obj_halbench_300_with_image.jsonl"
    questions.write_text("".join(json.dumps({"image_id": a["image_id"], "question": a["question"],
                                             "image": base64.b64encode(_jpeg("red")).decode()}) + "\n"
                                 for a in answers))
    amber = json.loads((REAL / "amber/data/query/query_all.json").read_text())
    amber_images = tmp_path / "amber_images"
    amber_images.mkdir()
    for name in {q["image"] for q in amber}:
        (amber_images / name).write_bytes(_jpeg("blue"))
    template = REAL / "rlhf-v/eval/data/mmhal-bench_answer_template.json"
    mmhal_images = tmp_path / "mmhal_images"
    mmhal_images.mkdir()
    for record in json.loads(template.read_text()):
        (mmhal_images / record["image_src"].rsplit("/", 1)[-1]).write_bytes(_jpeg("green"))

    benchmark_scores = {
        "generation": {"batch_size": 16, "max_new_tokens": 8},
        "max_items": {"object_halbench": 4, "amber": 6, "mmhal": 8, "pope": 4},
        "object_halbench": {"mode": "official", "questions": str(questions),
                            "coco_annotations": str(CONFORMANCE / "objhal/coco"),
                            "synonyms": str(REAL / "rlhf-v/eval/data/synonyms_refine.txt")},
        "amber": {"mode": "official", "path": str(REAL / "amber"), "images": str(amber_images)},
        "mmhal": {"path": str(template), "images": str(mmhal_images),
                  "judge_script": str(REAL / "llava-rlhf/Eval/eval_gpt_mmhal.py")},
    }
    # The ShapeWorld base model (and its data) come from the session's shared base: only the benchmarks are real.
    root = project_from_base(shapeworld_base, tmp_path / "proj", benchmark_scores=benchmark_scores)
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MDPO_TEST_JUDGE_KEY", "sk-test-not-a-secret")
    judge = JudgeResource(kind="openai", base_url=f"http://127.0.0.1:{judge_server.server_address[1]}/v1",
                          model="judge-test", api_key_env="MDPO_TEST_JUDGE_KEY")
    resources = pipeline_resources(root) | {"judge": judge}
    everything = [*data_assets, *training_assets, *evaluation_assets, *evaluation_checks]
    result = dg.materialize(everything, selection="key:benchmark_scores", partition_key="base", resources=resources)
    assert result.success

    scores = json.loads((root / "artifacts/eval/base/scores.json").read_text())
    ohb, amb, mm = scores["object_halbench"], scores["amber"], scores["mmhal"]
    assert ohb["mode"] == "official" and ohb["n_answers"] == 4 and set(ohb["official"]) >= {"CHAIRs_refine", "CHAIRi"}
    assert scores["scores"]["chair_s"] == ohb["official"]["CHAIRs_refine"]
    assert amb["mode"] == "official" and "generative_official" in amb and "discriminative_official" in amb
    assert mm["n"] == 8 and mm["judge"]["prompt"] == "official" and mm["judge"]["judge_model"] == "judge-test"
    assert len(judge_server.prompts) == 8 and all("### Example 5:" in p for p in judge_server.prompts)
    assert "official MMHal-Bench judge prompt" in scores["judge"]
    assert len(list((root / "artifacts/eval/object_halbench_images").iterdir())) == 4
