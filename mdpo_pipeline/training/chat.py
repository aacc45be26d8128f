"""How a conversation becomes model text, the same way in training, in the reference cache and in generation.

Chat templates differ in what they write: llava-hf's never writes <s> (the tokenizer adds it) nor ends the
answer with </s>; Gemma 3's writes <bos> itself (and its tokenizer would add a second one); Qwen's ends every
turn with <|im_end|>. Here every prompt gets exactly the start-of-sequence token the tokenizer would give it,
and every answer ends with an end token the model's generation stops at, so the processor is always called
with ``add_special_tokens=False``.
"""

from __future__ import annotations

from typing import Any

from trl.data_utils import apply_chat_template

from mdpo_pipeline.training.families import CheckpointError

_IMAGE_PROBE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer starts a text with its BOS token on its own (Llama, Gemma: yes; Qwen: no)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def with_bos(tokenizer, text: str) -> str:
    """``text`` starting with the BOS token when the tokenizer would add one and the template did not write it."""
    if adds_bos(tokenizer) and not text.startswith(tokenizer.bos_token):
        return tokenizer.bos_token + text
    return text


def _special_tokens(tokenizer) -> list[str]:
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return sorted({*tokenizer.all_special_tokens, *added}, key=len, reverse=True)


def with_end_of_answer(tokenizer, completion: str) -> str:
    """``completion`` ending with an end-of-turn token: the template's own, or the tokenizer's EOS appended."""
    stripped = completion.rstrip()
    if any(stripped.endswith(token) for token in _special_tokens(tokenizer)):
        return completion
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no eos_token and the chat template ends answers with none")
    return stripped + tokenizer.eos_token


def generation_prompt(processor, question: str) -> str:
    """The text of a one-image user turn asking ``question``, ready for the answer (generation and evaluation)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return with_bos(processor.tokenizer, text)


def preference_texts(processor, conversation: dict[str, Any]) -> dict[str, str]:
    """prompt / chosen / rejected (and SymMPO's contrast_answer, when the example has one) texts of one preference
    example (TRL's message format), as training sees them."""
    texts = apply_chat_template({k: conversation[k] for k in ("prompt", "chosen", "rejected")}, processor)
    tokenizer = processor.tokenizer
    out = {"prompt": with_bos(tokenizer, texts["prompt"])}
    for key in ("chosen", "rejected"):
        out[key] = with_end_of_answer(tokenizer, texts[key])
    if "contrast_answer" in conversation:  # SymMPO's y': rendered as an answer to the same prompt
        contrast = apply_chat_template({"prompt": conversation["prompt"], "chosen": conversation["contrast_answer"],
                                        "rejected": conversation["rejected"]}, processor)
        out["contrast_answer"] = with_end_of_answer(tokenizer, contrast["chosen"])
    return out


def check_chat_template(processor, where: str) -> None:
    """Stop with a message naming ``where`` when the processor's chat template cannot render an image turn."""
    template = getattr(processor, "chat_template", None)
    if not template:
        raise CheckpointError(
            f"{where}: the processor has no chat template; put the release's chat_template.jinja (or "
            "chat_template.json) beside the weights"
        )
    try:
        text = processor.apply_chat_template(_IMAGE_PROBE, add_generation_prompt=True, tokenize=False)
    except Exception as e:  # a template error is the user's file, not our bug: name it
        raise CheckpointError(f"{where}: the chat template fails on a user turn with an image: {e}") from e
    image_token = getattr(processor, "image_token", None) or getattr(processor, "boi_token", None)
    if image_token and image_token not in text:
        raise CheckpointError(
            f"{where}: the chat template renders an image turn without the image token {image_token!r} "
            f"(rendered {text!r}); use the release's chat template, which places the image"
        )
