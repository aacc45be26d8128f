"""MDPOTrainer: TRL's DPOTrainer with the mDPO loss and one policy forward over [chosen; rejected; corrupted].

Relies on TRL 1.16 internals (pinned): ``_compute_loss`` (overridden), ``_set_signature_columns_if_needed``
(extended), and the attributes ``_metrics``, ``ref_model``, ``beta``, ``aux_loss_enabled`` and the fused LM
head that ``DPOTrainer.__init__`` installs. Everything else (PEFT wrapping, reference model, dropout, logging,
evaluation, checkpoints) is TRL's.
"""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from trl import DPOTrainer

from mdpo_pipeline.core.objectives import RunningMean, method_loss
from mdpo_pipeline.training.config import MDPOConfig
from mdpo_pipeline.training.data import REFERENCE_COLUMNS, VIEWS, DataCollatorForMDPO
from mdpo_pipeline.training.packing import packed_completion_logps, use_packing
from mdpo_pipeline.training.reference import (
    completion_logps,
    load_reference_cache,
    read_reference_summary,
    reference_mode,
    with_reference_logps,
)


@contextlib.contextmanager
def _checkpointing_off(model: torch.nn.Module) -> Iterator[None]:
    """Activation checkpointing off for a no-grad pass, by the layers' own flags.

    TRL's disable_gradient_checkpointing re-enables it through gradient_checkpointing_enable(), which registers
    the input-grad hook again each time: one more hook on the embeddings every step."""
    flagged = [m for m in model.modules() if getattr(m, "gradient_checkpointing", None) is True]
    for module in flagged:
        module.gradient_checkpointing = False
    try:
        yield
    finally:
        for module in flagged:
            module.gradient_checkpointing = True


def _views(args: MDPOConfig) -> tuple[str, ...]:
    # Methods without a term on the corrupted image skip its B rows entirely; SymMPO adds its contrast views.
    if args.mdpo_weights.needs_contrast:
        return ("chosen", "rejected", "chosen_corrupted", "contrast", "contrast_corrupted")
    if args.mdpo_weights.needs_corrupted:
        return ("chosen", "rejected", "chosen_corrupted")
    return ("chosen", "rejected")


def _require_columns(dataset, views: tuple[str, ...], name: str) -> None:
    needed = {"prompt", "chosen", "rejected", "image"} | {column for view in views for column in VIEWS[view]}
    missing = sorted(needed - set(next(iter(dataset))))
    if "contrast_answer" in missing:
        raise ValueError(
            f"{name} has no contrasting answers: SymMPO's terms need the contrasting image of each instruction with "
            "its own answer (corrupted_images.strategy: counterfactual; ShapeWorld renders them, real data names "
            "them in corrupted_images.counterfactual_path)")
    if missing:
        raise ValueError(
            f"{name} lacks columns {missing}: build it with mdpo_pipeline.training.data.load_preference_dataset"
        )


#: Where a checkpoint keeps the running mean of MPO's quality term, so a resumed run continues the same δ.
QUALITY_SHIFT_FILE = "quality_shift.json"


class MDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is mDPO (docs/method.md, "Objective"); configure it with an MDPOConfig.

    Each step runs the policy once over the view-major batch [chosen; rejected; chosen + corrupted image]
    (the last B rows only when a weighted term needs them), and the reference either once more over the same
    rows without gradient (adapter disabled, or TRL's frozen ``ref_model``) or not at all when
    ``args.reference_cache`` supplies it.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "dpo", "mdpo"]
    _name = "mDPO"
    _paper: ClassVar[dict[str, str]] = {
        "title": "mDPO: Conditional Preference Optimization for Multimodal Large Language Models",
        "id": "2406.11839",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{wang2024mdpo,
                title        = {{mDPO: Conditional Preference Optimization for Multimodal Large Language Models}},
                author       = {Fei Wang and Wenxuan Zhou and James Y. Huang and Nan Xu and Sheng Zhang and
                                Hoifung Poon and Muhao Chen},
                year         = 2024,
                eprint       = {arXiv:2406.11839},
            }"""),
    }

    def __init__(
        self,
        model,
        ref_model=None,
        args: MDPOConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        **kwargs: Any,
    ):
        if not isinstance(args, MDPOConfig):
            raise TypeError(f"MDPOTrainer needs args=MDPOConfig(...), got {type(args).__name__}")
        if kwargs.get("compute_metrics") is not None:
            raise ValueError("compute_metrics is not supported: the mDPO metrics are logged with the loss")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        self.views = _views(args)
        eval_sets = eval_dataset if isinstance(eval_dataset, dict) else {"eval_dataset": eval_dataset}
        for name, dataset in {"train_dataset": train_dataset, **eval_sets}.items():
            if dataset is not None:
                _require_columns(dataset, self.views, name)
        if args.reference_cache is not None:
            cached_max_length = read_reference_summary(args.reference_cache)["max_length"]
            if cached_max_length != args.max_length:
                raise ValueError(
                    f"reference cache {args.reference_cache} was computed with max_length={cached_max_length}, "
                    f"training uses max_length={args.max_length}: truncation would differ"
                )
            cache = load_reference_cache(args.reference_cache)
            train_dataset = with_reference_logps(train_dataset, cache)
            if isinstance(eval_dataset, dict):
                eval_dataset = {name: with_reference_logps(d, cache) for name, d in eval_dataset.items()}
            elif eval_dataset is not None:
                eval_dataset = with_reference_logps(eval_dataset, cache)
        super().__init__(model, ref_model, args, data_collator, train_dataset, eval_dataset, processing_class, **kwargs)
        if self.aux_loss_enabled:
            raise NotImplementedError("MoE router auxiliary losses are not added to the mDPO loss")
        # MPO's quality term compares each reward with the mean of all rewards so far; it travels with checkpoints.
        self.quality_shift = RunningMean()
        # One decision per run, announced once: the policy and the live reference run the same forward.
        self.logps = packed_completion_logps if use_packing(self.model, args.packed_rows) else completion_logps
        if data_collator is None:
            # TRL built its own vision collator (and settled the pad token); ours adds the corrupted-image rows.
            self.data_collator = DataCollatorForMDPO(
                self.processing_class,
                views=self.views,
                withhold_image=args.withhold_image,
                max_length=args.max_length,
            )

    def _set_signature_columns_if_needed(self):
        # remove_unused_columns would otherwise drop the corrupted image, the contrasting answer and the cached
        # reference columns.
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "corrupted_image", "contrast_answer",
                                       *REFERENCE_COLUMNS.values()]

    def _reference_logps(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The reference's summed log-probs for every row of the batch, without gradient."""
        with torch.no_grad(), _checkpointing_off(self.model):
            if self.ref_model is not None:
                return self.logps(self.ref_model, inputs)
            with reference_mode(self.accelerator.unwrap_model(self.model)):
                return self.logps(self.model, inputs)

    def _out_of_memory(self, inputs: dict[str, Any], cause: str) -> str:
        """What ran out of memory and which settings shrink it, for the one message a user reads."""
        rows, length = inputs["input_ids"].shape
        images = inputs.get("pixel_values")
        args = self.args
        return (f"out of memory in a training step on a batch of {rows} rows ({len(self.views)} views × "
                f"{rows // len(self.views)} pairs) × {length} tokens"
                + (f", pixel_values {tuple(images.shape)}" if images is not None else "")
                + f": lower per_device_train_batch_size ({args.per_device_train_batch_size}, raising "
                f"gradient_accumulation_steps to keep the batch) or max_length ({args.max_length}), or turn on "
                f"activation_checkpointing ({args.activation_checkpointing}) or quantization: 4bit; "
                f"packed_rows is {args.packed_rows}. The device said: {cause.splitlines()[0][:300]}")

    def _compute_loss(self, model, inputs, return_outputs):
        if return_outputs:
            raise NotImplementedError("MDPOTrainer returns no logits: use prediction_loss_only")
        mode = "train" if self.model.training else "eval"
        n_views = len(self.views)
        try:
            policy_logps = self.logps(model, inputs)
            reference_logps = inputs["ref_logps"] if "ref_logps" in inputs else self._reference_logps(inputs)
        except torch.OutOfMemoryError as e:
            raise torch.OutOfMemoryError(self._out_of_memory(inputs, str(e))) from e
        policy = policy_logps.chunk(n_views)
        reference = reference_logps.to(policy_logps.dtype).chunk(n_views)
        weights = self.args.mdpo_weights
        chosen_tokens = inputs["completion_mask"].chunk(n_views)[0].sum(dim=1) if weights.sft > 0 else None
        shift = self._quality_shift(policy, reference, mode) if weights.quality > 0 else 0.0
        output = method_loss(policy, reference, weights=weights, beta=self.beta, delta=self.args.delta,
                             chosen_tokens=chosen_tokens, quality_shift=shift)

        metrics = output.metrics()
        metrics.update({f"logps/{view}": logps.detach().mean().item() for view, logps in zip(self.views, policy)})
        # One gather for all metrics; every process sees the same per-device batch size, so the mean is exact.
        values = torch.tensor(list(metrics.values()), device=self.accelerator.device)
        values = self.accelerator.gather(values).view(-1, len(metrics)).mean(dim=0)
        for key, value in zip(metrics, values.tolist()):
            self._metrics[mode][key].append(value)
        return output.loss

    def _quality_shift(self, policy, reference, mode: str) -> float:
        """BCO's δ for this step: the running mean of the rewards, this batch's (all processes') folded in when
        training, as TRL's bco_pair does; evaluation reads it unchanged."""
        if mode != "train":
            return self.quality_shift.mean
        rewards = self.beta * torch.cat([policy[0] - reference[0], policy[1] - reference[1]]).detach().float()
        return self.quality_shift.update(self.accelerator.gather(rewards.mean().reshape(1)))

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.mdpo_weights.quality > 0 and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, QUALITY_SHIFT_FILE), "w") as f:
                json.dump({"mean": self.quality_shift.mean, "count": self.quality_shift.count}, f)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = os.path.join(resume_from_checkpoint, QUALITY_SHIFT_FILE)
        if os.path.isfile(saved):
            with open(saved) as f:
                state = json.load(f)
            self.quality_shift.mean, self.quality_shift.count = float(state["mean"]), int(state["count"])
