"""A small convolutional vision tower for the tiny ShapeWorld LLaVA, registered with transformers' Auto classes.

Why not a tiny CLIP ViT: at this scale (a few hundred thousand parameters, a few hundred CPU steps) a 2-layer
ViT does not learn to tell ShapeWorld's objects apart (held-out object recall stayed at 0.13-0.24 whatever the
patch size or width), while a 3-layer CNN learns them quickly (docs/shapeworld.md, "What a quick experiment
showed"). The tower plugs into
``LlavaForConditionalGeneration`` unchanged: LLaVA builds it with ``AutoModel.from_config`` and reads
``hidden_states[vision_feature_layer]``, so the model saves and loads with ``from_pretrained`` as long as this
module is imported (``mdpo_pipeline.training.models`` imports it).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

MODEL_TYPE = "shapeworld_cnn"


class ShapeWorldVisionConfig(PretrainedConfig):
    """Config of the ShapeWorld CNN tower: a patchifying stem, one stride-2 block per entry of ``channels``,
    then a projection to tokens."""

    model_type = MODEL_TYPE
    base_config_key = "vision_config"

    def __init__(
        self,
        image_size: int = 64,
        num_channels: int = 3,
        channels: tuple[int, ...] | list[int] = (64, 96),
        hidden_size: int = 128,
        groups: int = 8,
        stem_channels: int = 32,
        stem_stride: int = 4,
        **kwargs,
    ):
        self.image_size = image_size
        self.num_channels = num_channels
        self.stem_channels = stem_channels
        self.stem_stride = stem_stride
        self.channels = list(channels)
        self.hidden_size = hidden_size
        self.groups = groups
        super().__init__(**kwargs)
        if image_size % self.patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the tower's stride {self.patch_size}")
        if any(c % groups for c in (*self.channels, stem_channels)):
            raise ValueError(f"every entry of channels {self.channels} must be a multiple of groups ({groups})")

    @property
    def patch_size(self) -> int:
        """Pixels per output token along each side (the product of the stem's and the blocks' strides)."""
        return self.stem_stride * 2 ** len(self.channels)

    @property
    def num_tokens(self) -> int:
        """Image tokens per image: one per cell of the final feature map."""
        return (self.image_size // self.patch_size) ** 2


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        # GroupNorm, not BatchNorm: the tower is frozen under LoRA, and BatchNorm's running statistics would
        # still drift in train mode, so policy and cached reference would see different features.
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(x)))


class ShapeWorldVisionModel(PreTrainedModel):
    """CNN tower: pixels (B, 3, H, W) → tokens (B, (H/s)·(W/s), hidden_size) with learned position embeddings."""

    config_class = ShapeWorldVisionConfig
    base_model_prefix = "shapeworld_cnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _supports_sdpa = True  # no attention inside; LLaVA asks every sub-model which attention it may use
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: ShapeWorldVisionConfig):
        super().__init__(config)
        # The stem cuts pixels into stem_stride² patches first: the convolutions then run on a 16×16 grid
        # instead of 64×64, which is most of a CPU training step's cost.
        self.stem = nn.Sequential(
            nn.Conv2d(config.num_channels, config.stem_channels, config.stem_stride, stride=config.stem_stride),
            nn.GroupNorm(config.groups, config.stem_channels),
            nn.GELU(),
        )
        widths = [config.stem_channels, *config.channels]
        self.blocks = nn.ModuleList(_Block(a, b, config.groups) for a, b in zip(widths, widths[1:]))
        self.proj = nn.Linear(widths[-1], config.hidden_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_tokens, config.hidden_size))
        self.post_init()

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def _init_weights(self, module):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ShapeWorldVisionModel):
            nn.init.normal_(module.position_embedding, std=0.02)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=None, **kwargs):
        x = self.stem(pixel_values.to(self.proj.weight.dtype))
        for block in self.blocks:
            x = block(x)
        tokens = self.proj(x.flatten(2).transpose(1, 2)) + self.position_embedding
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens, pooler_output=tokens.mean(dim=1), hidden_states=(tokens,)
        )


AutoConfig.register(MODEL_TYPE, ShapeWorldVisionConfig, exist_ok=True)
AutoModel.register(ShapeWorldVisionConfig, ShapeWorldVisionModel, exist_ok=True)
