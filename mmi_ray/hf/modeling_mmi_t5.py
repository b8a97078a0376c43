"""T5 with learned absolute positions added to the encoder's input: mmi-ray's ``tiny`` student.

This file is copied into an exported model folder (``mmi-ray export``) and loaded by
``transformers`` itself, with ``trust_remote_code=True``; it imports only torch and transformers.
The tiny student adds learned absolute position embeddings to the encoder input (a T5 trained from
scratch at this size cannot tell which token sits where from relative attention alone); every other
part is stock T5, so a hub or T5-v1.1 student exports as a stock ``T5ForConditionalGeneration``
without this file.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import T5Config, T5ForConditionalGeneration


class MMIT5Config(T5Config):
    model_type = "mmi_t5"

    def __init__(self, encoder_positions: int = 512, **kwargs):
        super().__init__(**kwargs)
        self.encoder_positions = encoder_positions
        """Learned absolute positions added to the encoder's token embeddings (its longest input)."""


class EncoderEmbedding(nn.Module):
    """The encoder's input embedding: the shared token embedding (tied: ``weight``) plus a learned
    absolute position embedding, held by the model as ``encoder_positions``."""

    def __init__(self, shared: nn.Embedding, positions: nn.Embedding):
        super().__init__()
        self.weight = shared.weight
        object.__setattr__(self, "_positions", positions)  # owned (and saved) by the model, not here

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.size(1), device=input_ids.device)
        return F.embedding(input_ids, self.weight) + self._positions(pos)  # [B, T, D]


class MMIT5ForConditionalGeneration(T5ForConditionalGeneration):
    config_class = MMIT5Config

    def __init__(self, config: MMIT5Config):
        super().__init__(config)
        self.encoder_positions = nn.Embedding(config.encoder_positions, config.d_model)
        self.encoder.embed_tokens = EncoderEmbedding(self.shared, self.encoder_positions)
        self.post_init()
