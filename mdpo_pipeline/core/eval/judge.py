"""An OpenAI-compatible chat-completions judge client (standard library only) with a resumable cache.

The client retries 429, 5xx and connection failures with exponential backoff and jitter (honouring
Retry-After) and fails at once on other 4xx. Every judgment is appended to a JSONL cache keyed by
sha256(model, prompt, temperature) and fsynced before the next request, so a rerun never pays twice
and a run that dies halfway resumes where it stopped. Each record also names the sha256 of the
prompt template it was filled from (``template_sha256``), so judgments made with different prompts
are told apart. The API key is read from an environment variable and never appears in logs,
exception messages or reprs.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import math
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from mdpo_pipeline.core.io import canonical_json

log = logging.getLogger(__name__)

ENV_API_KEY = "OPENAI_API_KEY"  #: default name of the environment variable holding the key
ENV_BASE_URL = "MDPO_JUDGE_BASE_URL"
ENV_MODEL = "MDPO_JUDGE_MODEL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_BODY_EXCERPT = 300  # characters of an error body kept in messages


class JudgeError(RuntimeError):
    """A judge request or run failed."""


class JudgeConfigError(JudgeError, ValueError):
    """The judge is not configured: no model, no key, a bad setting."""


class JudgeHTTPError(JudgeError):
    """The server refused the request (``status`` None for a connection failure)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class JudgeResponseError(JudgeError):
    """The server answered 200 but not with a chat completion."""


class JudgeRunError(JudgeError):
    """``judge_all`` stopped early; ``n_cached`` of ``n_total`` judgments are saved and a rerun resumes."""

    def __init__(self, message: str, n_cached: int, n_total: int):
        super().__init__(message)
        self.n_cached = n_cached
        self.n_total = n_total


class _Secret:
    """Holds the key so that repr(), vars() and tracebacks' locals show *** instead of it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge; holds the key's environment variable name, never the key."""

    base_url: str
    model: str
    api_key_env: str | None = ENV_API_KEY  #: None for a server without authentication
    temperature: float = 0.0
    max_tokens: int | None = 1024
    timeout_s: float = 60.0
    max_retries: int = 6  #: retries after the first attempt, for 429 / 5xx / connection errors
    backoff_base_s: float = 1.0  #: first retry waits about this long, doubling each time
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 600.0  #: a longer Retry-After is cut to this

    def __post_init__(self):
        if not self.base_url or not self.base_url.startswith(("http://", "https://")):
            raise JudgeConfigError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            raise JudgeConfigError("no judge model: pass model= or set " + ENV_MODEL)
        for name in ("timeout_s", "backoff_base_s", "backoff_max_s", "retry_after_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise JudgeConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise JudgeConfigError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")

    @classmethod
    def resolve(
        cls, base_url: str | None = None, model: str | None = None, api_key_env: str | None = ENV_API_KEY, **kwargs
    ) -> JudgeConfig:
        """Explicit arguments, else $MDPO_JUDGE_BASE_URL / $MDPO_JUDGE_MODEL, else the OpenAI URL (model required)."""
        return cls(
            base_url=base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL,
            model=model or os.environ.get(ENV_MODEL) or "",
            api_key_env=api_key_env,
            **kwargs,
        )

    @property
    def url(self) -> str:
        """The chat-completions endpoint."""
        return self.base_url.rstrip("/") + "/chat/completions"

    def as_dict(self) -> dict:
        """JSON form (no key in it: only the variable's name)."""
        return asdict(self)


class ChatJudge(Protocol):
    """What ``judge_all`` needs of a judge: its identity for the cache key and one call per prompt."""

    model: str
    temperature: float

    def complete(self, prompt: str) -> str: ...


class _Retry(Exception):
    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
        seconds = (when - now_dt).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class ChatCompletionsClient:
    """Sends one user message per prompt to ``POST {base_url}/chat/completions`` and returns the reply text."""

    def __init__(
        self,
        config: JudgeConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.config = config
        key = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise JudgeConfigError(
                    f"environment variable {config.api_key_env} (the judge's API key) is not set; "
                    "set it, or use api_key_env=None for a server without authentication"
                )
        self._key = _Secret(key) if key else None
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter only spreads retries; it never affects results

    @classmethod
    def from_env(cls, base_url: str | None = None, model: str | None = None,
                 api_key_env: str | None = ENV_API_KEY, **kwargs) -> ChatCompletionsClient:
        """A client from JudgeConfig.resolve's arguments and environment."""
        return cls(JudgeConfig.resolve(base_url, model, api_key_env, **kwargs))

    @property
    def model(self) -> str:
        """The judge model's name (part of the cache key)."""
        return self.config.model

    @property
    def temperature(self) -> float:
        """Sampling temperature (part of the cache key)."""
        return self.config.temperature

    def __repr__(self) -> str:
        c = self.config
        state = "set" if self._key else "none"
        return f"ChatCompletionsClient(url={c.url!r}, model={c.model!r}, api_key_env={c.api_key_env!r}, key={state})"

    def _redact(self, text: str) -> str:
        if self._key and self._key.reveal():
            text = text.replace(self._key.reveal(), "***")
        return text

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt`` (0-based): capped exponential with jitter, at least Retry-After."""
        c = self.config
        delay = min(c.backoff_max_s, c.backoff_base_s * 2**attempt) * self._rng.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, c.retry_after_max_s))
        return delay

    def complete(self, prompt: str) -> str:
        """The judge's reply to ``prompt``, retrying transient failures; raises JudgeError otherwise."""
        c = self.config
        body = {"model": c.model, "messages": [{"role": "user", "content": prompt}], "temperature": c.temperature}
        if c.max_tokens is not None:
            body["max_tokens"] = c.max_tokens
        data = json.dumps(body).encode("utf-8")
        for attempt in range(c.max_retries + 1):
            try:
                return self._post(data)
            except _Retry as exc:
                if attempt == c.max_retries:
                    raise JudgeHTTPError(
                        f"judge request to {c.url} failed after {attempt + 1} attempt(s): {exc.reason}",
                        status=exc.status, retryable=True,
                    ) from None
                delay = self.backoff(attempt, exc.retry_after)
                log.warning("judge request failed (%s); retry %d of %d in %.2fs",
                            exc.reason, attempt + 1, c.max_retries, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, data: bytes) -> str:
        c = self.config
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = "Bearer " + self._key.reveal()
        request = urllib.request.Request(c.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=c.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read().decode("utf-8", "replace")[:_BODY_EXCERPT]
            except (OSError, http.client.HTTPException):
                detail = ""
            reason = self._redact(f"HTTP {exc.code}" + (f": {detail.strip()}" if detail.strip() else ""))
            if exc.code == 429 or exc.code >= 500:
                raise _Retry(reason, exc.code, parse_retry_after(exc.headers.get("Retry-After"))) from None
            raise JudgeHTTPError(f"judge request to {c.url} refused: {reason}", status=exc.code) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            # Connection refused/reset/dropped, timeouts and truncated bodies are all worth retrying.
            reason = getattr(exc, "reason", None) or exc
            raise _Retry(self._redact(f"{type(exc).__name__}: {reason}")) from None
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
            content = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            excerpt = self._redact(raw[:_BODY_EXCERPT].decode("utf-8", "replace"))
            raise JudgeResponseError(f"judge reply from {c.url} is not a chat completion: {excerpt!r}") from None
        if content is None:
            # A filtered or empty reply: grading it as unparseable (0) beats stopping the run on it.
            log.warning("judge reply has no content (finish_reason=%r); recorded as empty",
                        choice.get("finish_reason") if isinstance(choice, dict) else None)
            return ""
        if not isinstance(content, str):
            raise JudgeResponseError(f"judge reply content is a {type(content).__name__}, expected text")
        return content


# --- cache -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedJudgment:
    """One cached judge reply with what it was asked."""

    key: str
    model: str
    temperature: float
    prompt: str
    response: str
    #: sha256 of the prompt template ``prompt`` was filled from; None for untemplated prompts and old lines
    template_sha256: str | None = None

    def as_dict(self) -> dict:
        """JSON form (one cache line)."""
        return asdict(self)


def judgment_key(model: str, prompt: str, temperature: float) -> str:
    """sha256 of the canonical JSON of (model, prompt, temperature): the cache key."""
    blob = canonical_json({"model": model, "prompt": prompt, "temperature": float(temperature)})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgmentCache:
    """Append-only JSONL of judgments; each append is flushed and fsynced before the call returns."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._entries: dict[str, CachedJudgment] = {}
        self._needs_newline = False
        self.n_bad_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        self._needs_newline = bool(raw) and not raw.endswith(b"\n")
        for line in raw.decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            try:
                entry = CachedJudgment(**json.loads(line))
                ok = isinstance(entry.response, str) and entry.key == judgment_key(
                    entry.model, entry.prompt, entry.temperature
                )
            except (ValueError, TypeError):
                ok = False
            if ok:
                self._entries[entry.key] = entry
            else:
                self.n_bad_lines += 1
        if self.n_bad_lines:
            # A run killed mid-append leaves at most one partial last line; those judgments are redone.
            log.warning("judgment cache %s: ignored %d unreadable line(s)", self.path, self.n_bad_lines)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> str | None:
        """The cached reply for ``key``, or None."""
        entry = self._entries.get(key)
        return entry.response if entry else None

    def entry(self, key: str) -> CachedJudgment | None:
        """The whole cached record for ``key`` (prompt, model, template sha256 ...), or None."""
        return self._entries.get(key)

    def put(self, model: str, prompt: str, temperature: float, response: str,
            template_sha256: str | None = None) -> str:
        """Append one judgment durably and return its key."""
        key = judgment_key(model, prompt, temperature)
        entry = CachedJudgment(key, model, float(temperature), prompt, response, template_sha256)
        line = ("\n" if self._needs_newline else "") + canonical_json(entry.as_dict()) + "\n"
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if created:  # the new file's directory entry must be durable too
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._needs_newline = False
        self._entries[key] = entry
        return key


def _progress(items: list, enabled: bool) -> Iterable:
    if not enabled:
        return items

    return tqdm(items, desc="judge")


def judge_all(
    client: ChatJudge,
    prompts: Iterable[str],
    cache: JudgmentCache | None = None,
    progress: bool = False,
    *,
    template_sha256: str | None = None,
) -> list[str]:
    """The judge's reply to every prompt, in order; cached ones are reused and new ones cached at once.

    ``template_sha256`` (the sha256 of the template the prompts were filled from) is stored with
    each new judgment. It is not part of the key: the key's prompt already holds the template text.
    """
    prompts = list(prompts)
    keys = [judgment_key(client.model, p, client.temperature) for p in prompts]
    replies: dict[str, str] = {}
    if cache is not None:
        replies = {k: r for k in set(keys) if (r := cache.get(k)) is not None}
    first: dict[str, int] = {}  # key -> index of its first prompt; a repeated prompt is sent once
    for i, k in enumerate(keys):
        if k not in replies:
            first.setdefault(k, i)
    todo = list(first)
    log.info("judging %d prompts with %s: %d cached, %d to send", len(prompts), client.model,
             len(prompts) - sum(k in first for k in keys), len(todo))
    for k in _progress(todo, progress):
        try:
            reply = client.complete(prompts[first[k]])
        except Exception as exc:
            done = sum(key in replies for key in keys)
            where = f"cached in {cache.path}" if cache is not None else "not cached (no cache given)"
            raise JudgeRunError(
                f"judging stopped at prompt {first[k]}: {exc}. {done} of {len(keys)} judgments are {where}; "
                + ("a rerun with the same cache resumes with the rest" if cache is not None else
                   "pass a JudgmentCache so that a rerun can resume"),
                n_cached=done if cache is not None else 0, n_total=len(keys),
            ) from exc
        if cache is not None:
            cache.put(client.model, prompts[first[k]], client.temperature, reply, template_sha256)
        replies[k] = reply
    return [replies[k] for k in keys]
