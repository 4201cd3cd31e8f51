"""TemporalModel: input projection -> BiLSTM -> masked self-attention -> attention pooling.

``SuperEnhancedTemporalModel`` is the same model under the seed's name and keyword signature.

Parameter names and shapes follow the seed system's layout, so its checkpoints load with strict=True.
Unlike the seed's code, padded steps are masked out of self-attention and pooling, so a prediction does
not depend on how much padding a batch carries.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import ModelConfig


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B, T] bool, True at padded steps."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)


class TemporalModel(nn.Module):
    """The temporal model built from its ModelConfig (``self.config``, saved with every checkpoint)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        width = config.hidden_dim * (2 if config.bidirectional else 1)
        self.input_projection = _input_projection(config)
        self.lstm = nn.LSTM(
            config.hidden_dim,
            config.hidden_dim,
            num_layers=config.num_lstm_layers,
            batch_first=True,
            dropout=config.dropout if config.num_lstm_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        self.attention = nn.MultiheadAttention(
            width, config.num_attention_heads, dropout=config.dropout, batch_first=True
        )
        self.attention_norm = nn.LayerNorm(width)
        self.attention_pooling = _attention_pooling(width, config)
        self.classifier = _classifier(width, config)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled representation [B, width] and attention-pooling weights [B, T] (zero at padding)."""
        batch, max_len, _ = x.shape
        if lengths is None:
            lengths = torch.full((batch,), max_len, dtype=torch.long)
        lengths = lengths.to(device="cpu", dtype=torch.long)
        pad = padding_mask(lengths, max_len).to(x.device)

        h = self.input_projection(x)
        if h.is_cuda:
            packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=max_len)
        else:
            out = self._lstm_padded(h, lengths.to(h.device)).masked_fill(pad.unsqueeze(-1), 0.0)

        attended, _ = self.attention(out, out, out, key_padding_mask=pad, need_weights=False)
        out = self.attention_norm(out + attended)

        scores = self.attention_pooling(out).squeeze(-1).float()
        weights = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=1)
        pooled = torch.bmm(weights.unsqueeze(1).to(out.dtype), out).squeeze(1)
        return pooled, weights

    def _lstm_padded(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The LSTM on the right-padded batch, one layer and direction at a time: the same weights and the
        same numbers at valid steps as the packed LSTM, but on the CPU it runs in oneDNN's fused kernels
        (also in bf16), where a packed sequence falls back to a slow step-by-step loop.

        The forward direction is causal, so padding after a video cannot reach its valid steps. The reverse
        direction runs forward over each video reversed within its own length (padding stays at the end).
        Steps at or past a video's length hold garbage; the caller zeroes them.
        """
        lstm = self.lstm
        batch, max_len, _ = h.shape
        steps = torch.arange(max_len, device=h.device)
        flip = lengths.unsqueeze(1) - 1 - steps.unsqueeze(0)
        flip = torch.where(flip >= 0, flip, steps.unsqueeze(0)).unsqueeze(-1)  # an involution per row
        directions = ("", "_reverse") if lstm.bidirectional else ("",)
        layer_input = h
        for layer in range(lstm.num_layers):
            outputs = []
            for suffix in directions:
                weights = [getattr(lstm, f"{name}_l{layer}{suffix}")
                           for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                inputs = layer_input.gather(1, flip.expand(-1, -1, layer_input.shape[2])) if suffix else layer_input
                zeros = inputs.new_zeros(1, batch, lstm.hidden_size)
                out = torch.lstm(inputs, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True)[0]
                outputs.append(out.gather(1, flip.expand(-1, -1, out.shape[2])) if suffix else out)
            layer_input = torch.cat(outputs, dim=-1)
            if layer < lstm.num_layers - 1 and lstm.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, lstm.dropout, self.training)
        return layer_input

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, C] for features [B, T, D] with valid lengths [B] (None: every step is valid)."""
        pooled, _ = self.encode(x, lengths)
        return self.classifier(pooled)


def _light_dropout(config: ModelConfig) -> float:
    return config.dropout / 2  # the seed uses 0.2 beside its 0.4


def _input_projection(config: ModelConfig) -> nn.Sequential:
    hidden = config.hidden_dim
    return nn.Sequential(
        nn.Linear(config.feature_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(_light_dropout(config))
    )


def _attention_pooling(width: int, config: ModelConfig) -> nn.Sequential:
    hidden = config.hidden_dim
    return nn.Sequential(
        nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.Tanh(), nn.Dropout(_light_dropout(config)),
        nn.Linear(hidden, 1),
    )


def _classifier(width: int, config: ModelConfig) -> nn.Sequential:
    """1536 -> 768 -> 512 -> 256 -> C for the default hidden size of 768."""
    h1, h2, h3 = config.hidden_dim, config.hidden_dim * 2 // 3, config.hidden_dim // 3
    dropout = config.dropout
    return nn.Sequential(
        nn.Linear(width, h1), nn.LayerNorm(h1), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(h1, h2), nn.LayerNorm(h2), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(h2, h3), nn.LayerNorm(h3), nn.ReLU(), nn.Dropout(_light_dropout(config)),
        nn.Linear(h3, config.num_classes),
    )


class SuperEnhancedTemporalModel(TemporalModel):
    """The seed's name and keyword signature for ``TemporalModel(ModelConfig(...))``."""

    def __init__(
        self,
        feature_dim: int = ModelConfig.feature_dim,
        hidden_dim: int = ModelConfig.hidden_dim,
        num_classes: int = ModelConfig.num_classes,
        num_lstm_layers: int = ModelConfig.num_lstm_layers,
        num_attention_heads: int = ModelConfig.num_attention_heads,
        dropout: float = ModelConfig.dropout,
        bidirectional: bool = ModelConfig.bidirectional,
    ) -> None:
        super().__init__(ModelConfig(
            feature_dim, hidden_dim, num_classes, num_lstm_layers, num_attention_heads, dropout, bidirectional
        ))

    @classmethod
    def from_config(cls, config: ModelConfig) -> "SuperEnhancedTemporalModel":
        return cls(**dataclasses.asdict(config))
