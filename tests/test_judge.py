"""The chat-completions judge client against a real local HTTP server: retries, cache, resume, key secrecy."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mdpo_pipeline.core.eval.judge import (
    ChatCompletionsClient,
    JudgeConfig,
    JudgeConfigError,
    JudgeHTTPError,
    JudgeResponseError,
    JudgeRunError,
    JudgmentCache,
    judge_all,
    judgment_key,
    parse_retry_after,
)

KEY_ENV = "MDPO_TEST_JUDGE_KEY"
KEY = "sk-test-Zq8vN3-do-not-leak-4711"


def reply_for(prompt: str) -> str:
    """What the fake judge answers: a function of the prompt, so that results can be checked."""
    return f"Checked {hashlib.sha256(prompt.encode()).hexdigest()[:8]}.\nRating: {len(prompt) % 7}"


class FakeJudge:
    """Server state: a plan of actions for the first calls, then ``fail_from`` on, else success."""

    def __init__(self):
        self.plan: list[str] = []  # per call: "429", "500", "drop", "slow", "400", "garbage", "ok"
        self.fail_from: int | None = None  # calls from this index on answer 500
        self.retry_after = "0"
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def action(self, n: int) -> str:
        if n < len(self.plan):
            return self.plan[n]
        return "500" if self.fail_from is not None and n >= self.fail_from else "ok"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        state: FakeJudge = self.server.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        auth = self.headers.get("Authorization", "")
        with state.lock:
            n = len(state.requests)
            state.requests.append({"path": self.path, "auth": auth, "body": body})
            action = state.action(n)
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        if auth != f"Bearer {KEY}":
            # Echo what was sent, as careless servers do: the client must redact it.
            return self._json(401, {"error": {"message": f"bad credentials {auth}"}})
        if action == "drop":
            self.close_connection = True
            return
        if action == "429":
            return self._json(429, {"error": {"message": "rate limited"}}, {"Retry-After": state.retry_after})
        if action == "500":
            return self._json(500, {"error": {"message": f"internal error while serving {auth}"}})
        if action == "400":
            return self._json(400, {"error": {"message": "bad request"}})
        if action == "garbage":
            return self._json(200, {"unexpected": True})
        if action == "slow":
            time.sleep(0.6)
        prompt = body["messages"][-1]["content"]
        self._json(200, {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply_for(prompt)},
                         "finish_reason": "stop"}],
        })

    def _json(self, status: int, obj: dict, headers: dict | None = None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = FakeJudge()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(server, sleeps, monkeypatch, **overrides) -> ChatCompletionsClient:
    monkeypatch.setenv(KEY_ENV, KEY)
    settings = {
        "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
        "model": "judge-test",
        "api_key_env": KEY_ENV,
        "timeout_s": 5.0,
        "max_retries": 4,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.01,
    } | overrides
    return ChatCompletionsClient(JudgeConfig(**settings), sleep=sleeps.append, rng=random.Random(0))


PROMPTS = [f"prompt number {i}: " + "x" * i for i in range(6)]


def test_request_shape_and_reply(server, sleeps, monkeypatch):
    client = make_client(server, sleeps, monkeypatch)
    assert client.complete("hello judge") == reply_for("hello judge")
    (req,) = server.state.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == f"Bearer {KEY}"
    assert req["body"]["model"] == "judge-test"
    assert req["body"]["temperature"] == 0.0
    assert req["body"]["messages"] == [{"role": "user", "content": "hello judge"}]
    assert sleeps == []


def test_retries_429_500_and_dropped_connection(server, sleeps, monkeypatch):
    server.state.plan = ["429", "500", "drop"]
    server.state.retry_after = "3"
    client = make_client(server, sleeps, monkeypatch)
    assert client.complete("p") == reply_for("p")
    assert len(server.state.requests) == 4
    assert len(sleeps) == 3
    assert sleeps[0] >= 3.0  # Retry-After honoured even though backoff alone would be ~1 ms
    base = client.config.backoff_base_s
    assert 0.5 * base * 2 <= sleeps[1] <= base * 2  # attempt 1: base * 2^1, jittered into [50%, 100%]
    assert 0.5 * base * 4 <= sleeps[2] <= base * 4


def test_timeout_is_retried(server, sleeps, monkeypatch):
    server.state.plan = ["slow"]
    client = make_client(server, sleeps, monkeypatch, timeout_s=0.2)
    assert client.complete("p") == reply_for("p")
    assert len(server.state.requests) == 2 and len(sleeps) == 1


def test_backoff_exponential_capped_with_jitter(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    cfg = JudgeConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=KEY_ENV,
                      backoff_base_s=1.0, backoff_max_s=8.0)
    client = ChatCompletionsClient(cfg, rng=random.Random(1))
    delays = [client.backoff(a) for a in range(8)]
    for a, d in enumerate(delays):
        nominal = min(8.0, 2.0**a)
        assert 0.5 * nominal <= d <= nominal
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    assert client.backoff(0, retry_after=30.0) == 30.0
    assert client.backoff(0, retry_after=10_000.0) == cfg.retry_after_max_s


def test_gives_up_after_max_retries(server, sleeps, monkeypatch):
    server.state.fail_from = 0
    client = make_client(server, sleeps, monkeypatch, max_retries=2)
    with pytest.raises(JudgeHTTPError, match="failed after 3 attempt") as info:
        client.complete("p")
    assert info.value.status == 500 and info.value.retryable
    assert len(server.state.requests) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("action, status", [("400", 400)])
def test_no_retry_on_other_4xx(server, sleeps, monkeypatch, action, status):
    server.state.plan = [action]
    client = make_client(server, sleeps, monkeypatch)
    with pytest.raises(JudgeHTTPError, match=f"HTTP {status}") as info:
        client.complete("p")
    assert info.value.status == status and not info.value.retryable
    assert len(server.state.requests) == 1 and sleeps == []


def test_wrong_key_and_wrong_path_fail_at_once(server, sleeps, monkeypatch):
    client = make_client(server, sleeps, monkeypatch)
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-000")
    wrong = ChatCompletionsClient(client.config, sleep=sleeps.append)
    with pytest.raises(JudgeHTTPError) as info:
        wrong.complete("p")
    assert info.value.status == 401
    assert "sk-wrong-key-000" not in str(info.value)  # the server echoed it; the client redacts it
    monkeypatch.setenv(KEY_ENV, KEY)
    port = server.server_address[1]
    lost = make_client(server, sleeps, monkeypatch, base_url=f"http://127.0.0.1:{port}/v2")
    with pytest.raises(JudgeHTTPError) as info:
        lost.complete("p")
    assert info.value.status == 404
    assert len(server.state.requests) == 2 and sleeps == []


def test_non_completion_reply(server, sleeps, monkeypatch):
    server.state.plan = ["garbage"]
    client = make_client(server, sleeps, monkeypatch)
    with pytest.raises(JudgeResponseError, match="not a chat completion"):
        client.complete("p")


def test_cache_prevents_second_request(server, sleeps, monkeypatch, tmp_path):
    path = tmp_path / "judge_cache.jsonl"
    prompts = PROMPTS + [PROMPTS[0]]  # a repeated prompt is sent once
    first = judge_all(make_client(server, sleeps, monkeypatch), prompts, JudgmentCache(path))
    assert first == [reply_for(p) for p in prompts]
    assert len(server.state.requests) == len(PROMPTS)
    # A new process: a fresh client and cache object over the same file send nothing.
    again = judge_all(make_client(server, sleeps, monkeypatch), prompts, JudgmentCache(path))
    assert again == first
    assert len(server.state.requests) == len(PROMPTS)
    lines = path.read_text().splitlines()
    assert len(lines) == len(PROMPTS)
    row = json.loads(lines[0])
    assert row["key"] == judgment_key("judge-test", PROMPTS[0], 0.0)
    assert row["response"] == reply_for(PROMPTS[0])
    # The key covers model and temperature: another model is asked afresh.
    other = make_client(server, sleeps, monkeypatch, model="judge-test-2")
    judge_all(other, PROMPTS[:1], JudgmentCache(path))
    assert len(server.state.requests) == len(PROMPTS) + 1


def test_resume_after_failure_midway(server, sleeps, monkeypatch, tmp_path):
    path = tmp_path / "judge_cache.jsonl"
    k = 3
    server.state.fail_from = k
    client = make_client(server, sleeps, monkeypatch, max_retries=1)
    with pytest.raises(JudgeRunError) as info:
        judge_all(client, PROMPTS, JudgmentCache(path))
    err = info.value
    assert (err.n_cached, err.n_total) == (k, len(PROMPTS))
    assert f"{k} of {len(PROMPTS)} judgments are cached in {path}" in str(err)
    assert "rerun" in str(err) and "stopped at prompt 3" in str(err)
    assert len(path.read_text().splitlines()) == k
    sent_before = len(server.state.requests)  # k successes + 2 attempts at prompt k

    server.state.fail_from = None
    result = judge_all(make_client(server, sleeps, monkeypatch), PROMPTS, JudgmentCache(path))
    assert result == [reply_for(p) for p in PROMPTS]
    resent = [r["body"]["messages"][0]["content"] for r in server.state.requests[sent_before:]]
    assert resent == PROMPTS[k:]  # only the rest was sent


def test_truncated_last_line_is_redone(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    cache = JudgmentCache(path)
    cache.put("m", "a", 0.0, "rating: 1")
    cache.put("m", "b", 0.0, "rating: 2")
    with open(path, "a") as f:
        f.write('{"key": "abc", "model": "m", "prom')  # a run killed mid-append
    reloaded = JudgmentCache(path)
    assert len(reloaded) == 2 and reloaded.n_bad_lines == 1
    assert "ignored 1 unreadable line" in caplog.text
    reloaded.put("m", "c", 0.0, "rating: 3")
    final = JudgmentCache(path)
    assert len(final) == 3 and final.n_bad_lines == 1
    assert final.get(judgment_key("m", "c", 0.0)) == "rating: 3"
    # A line whose key does not match its content is not trusted either.
    row = json.loads(path.read_text().splitlines()[0]) | {"response": "rating: 6", "key": "0" * 64}
    path.write_text(json.dumps(row) + "\n")
    assert len(JudgmentCache(path)) == 0


def test_api_key_never_leaks(server, sleeps, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "cache.jsonl"
    server.state.plan = ["429", "500", "drop"]  # the 500 body echoes the Authorization header
    client = make_client(server, sleeps, monkeypatch, max_retries=3)
    judge_all(client, PROMPTS[:2], JudgmentCache(path), progress=False)
    server.state.fail_from = len(server.state.requests)
    with pytest.raises(JudgeRunError) as info:
        judge_all(client, PROMPTS, JudgmentCache(path))
    texts = [caplog.text, str(info.value), repr(info.value), str(info.value.__cause__), repr(client),
             repr(vars(client)), repr(client.config), json.dumps(client.config.as_dict()), path.read_text()]
    assert "internal error while serving" in str(info.value)  # the body was kept, minus the key
    assert "***" in str(info.value)
    for text in texts:
        assert KEY not in text
    assert "retry 1 of 3" in caplog.text


def test_config_from_environment(monkeypatch):
    monkeypatch.setenv("MDPO_JUDGE_BASE_URL", "http://judge.local:8000/v1/")
    monkeypatch.setenv("MDPO_JUDGE_MODEL", "env-model")
    cfg = JudgeConfig.resolve()
    assert (cfg.base_url, cfg.model, cfg.api_key_env, cfg.temperature) == (
        "http://judge.local:8000/v1/", "env-model", "OPENAI_API_KEY", 0.0)
    assert cfg.url == "http://judge.local:8000/v1/chat/completions"
    cfg = JudgeConfig.resolve(base_url="http://other:1/v1", model="explicit")
    assert (cfg.base_url, cfg.model) == ("http://other:1/v1", "explicit")
    monkeypatch.delenv("MDPO_JUDGE_BASE_URL")
    monkeypatch.delenv("MDPO_JUDGE_MODEL")
    assert JudgeConfig.resolve(model="m").base_url == "https://api.openai.com/v1"
    with pytest.raises(JudgeConfigError, match="MDPO_JUDGE_MODEL"):
        JudgeConfig.resolve()
    monkeypatch.delenv("MDPO_UNSET_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match="MDPO_UNSET_KEY"):
        ChatCompletionsClient.from_env(model="m", api_key_env="MDPO_UNSET_KEY")
    # A server without authentication: no key, no Authorization header.
    client = ChatCompletionsClient.from_env(model="m", api_key_env=None)
    assert "key=none" in repr(client)
    with pytest.raises(JudgeConfigError, match="max_retries"):
        JudgeConfig(base_url="http://x/v1", model="m", max_retries=-1)


def test_parse_retry_after():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


def test_cache_records_the_template_sha(server, sleeps, monkeypatch, tmp_path):
    path = tmp_path / "cache.jsonl"
    sha = hashlib.sha256(b"a judge template {} {} {} {}").hexdigest()
    judge_all(make_client(server, sleeps, monkeypatch), PROMPTS[:2], JudgmentCache(path), template_sha256=sha)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["template_sha256"] for r in rows] == [sha, sha]
    key = judgment_key("judge-test", PROMPTS[0], 0.0)
    assert rows[0]["key"] == key  # the key is unchanged: the prompt already holds the template's text
    cache = JudgmentCache(path)
    assert cache.entry(key).template_sha256 == sha and cache.entry("0" * 64) is None
    sent = len(server.state.requests)
    assert judge_all(make_client(server, sleeps, monkeypatch), PROMPTS[:2], cache, template_sha256=sha) == [
        reply_for(p) for p in PROMPTS[:2]]
    assert len(server.state.requests) == sent
    # Prompts that come from no template (the CHAIR object extractor's) store None.
    judge_all(make_client(server, sleeps, monkeypatch), PROMPTS[2:3], cache)
    assert json.loads(path.read_text().splitlines()[-1])["template_sha256"] is None
    # Lines written before the field existed still load, without a sha.
    old = {k: v for k, v in rows[0].items() if k != "template_sha256"}
    path.write_text(json.dumps(old) + "\n")
    reloaded = JudgmentCache(path)
    assert len(reloaded) == 1 and reloaded.n_bad_lines == 0 and reloaded.entry(key).template_sha256 is None
