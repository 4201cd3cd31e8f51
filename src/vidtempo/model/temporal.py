"""TemporalModel: input projection -> BiLSTM -> masked self-attention -> attention pooling.

``SuperEnhancedTemporalModel`` is the same model under the seed's name and keyword signature.

Parameter names and shapes follow the seed system's layout, so its checkpoints load with strict=True.
Unlike the seed's code, padded steps are masked out of self-attention and pooling, so a prediction does
not depend on how much padding a batch carries.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..config import ModelConfig, make_config
from ..errors import CheckpointError, ConfigError


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B, T] bool, True at padded steps."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)


def cast_weights(weights: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """``weights`` cast to ``dtype``, differentiably. When they are views into one buffer (an nn.LSTM on a GPU
    keeps its weights in cuDNN's layout), the copies are views into one new buffer at the same offsets, so
    cuDNN uses them in place instead of copying them into a buffer of its own on every call."""
    if all(w.dtype == dtype for w in weights):
        return list(weights)
    storage = weights[0].untyped_storage()
    shared = all(w.untyped_storage().data_ptr() == storage.data_ptr() and w.is_contiguous() for w in weights)
    ordered = sorted(weights, key=lambda w: w.storage_offset())
    if not shared or ordered[0].storage_offset() != 0:
        return [w.to(dtype) for w in weights]
    pieces, position = [], 0
    for w in ordered:
        gap = w.storage_offset() - position
        if gap < 0:  # overlapping views: not a layout to copy
            return [w.to(dtype) for w in weights]
        pieces += [w.new_zeros(gap), w.reshape(-1)] if gap else [w.reshape(-1)]
        position = w.storage_offset() + w.numel()
    tail = storage.nbytes() // weights[0].element_size() - position
    flat = torch.cat(pieces + ([weights[0].new_zeros(tail)] if tail > 0 else [])).to(dtype)
    return [flat[w.storage_offset() : w.storage_offset() + w.numel()].view_as(w) for w in weights]


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

        out = self._run_lstm(self.input_projection(x), lengths, pad)

        attended, _ = self.attention(out, out, out, key_padding_mask=pad, need_weights=False)
        out = self.attention_norm(out + attended)

        scores = self.attention_pooling(out).squeeze(-1).float()
        weights = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=1)
        pooled = torch.bmm(weights.unsqueeze(1).to(out.dtype), out).squeeze(1)
        return pooled, weights

    def _run_lstm(self, h: torch.Tensor, lengths: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The LSTM over ``h`` [B, T, H] in the run's dtype: autocast's for this device when it is on, else
        ``h``'s. Autocast is off inside, and the input and weights are cast explicitly, because autocast's
        cuDNN RNN wrapper runs in fp16 whatever dtype autocast was given (bf16 runs would train an fp16 LSTM
        without a gradient scaler). The output keeps that dtype, as autocast's own low-precision ops do.
        """
        device_type = h.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else h.dtype
        with torch.autocast(device_type, enabled=False):
            h = h.to(dtype)
            if h.is_cuda:
                return self._lstm_packed(h, lengths)
            return self._lstm_padded(h, lengths.to(h.device)).masked_fill(pad.unsqueeze(-1), 0.0)

    def _lstm_packed(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The LSTM on packed sequences in ``h``'s dtype (cuDNN on a GPU); zeros past each length. Kept out of
        torch.compile's graphs: cuDNN runs the LSTM either way, and tracing its weight buffer gains nothing.
        (Disabled on first use rather than by a decorator, which would import torch._dynamo, over a second,
        into every process that imports the model.)"""
        return _compile_disabled(_packed_lstm)(self, h, lengths)

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
                weights = [getattr(lstm, f"{name}_l{layer}{suffix}").to(h.dtype)
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


@functools.cache
def _compile_disabled(function):
    return torch.compiler.disable(function)


def _packed_lstm(self: TemporalModel, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """See ``TemporalModel._lstm_packed``."""
    lstm = self.lstm
    packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
    states = lstm.num_layers * (2 if lstm.bidirectional else 1)
    zeros = h.new_zeros(states, int(packed.batch_sizes[0]), lstm.hidden_size)
    weights = cast_weights(lstm._flat_weights, h.dtype)
    data = torch.lstm(packed.data, packed.batch_sizes, (zeros, zeros), weights, lstm.bias, lstm.num_layers,
                      lstm.dropout, self.training, lstm.bidirectional)[0]
    out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    return pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])[0]


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


def model_from_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike) -> TemporalModel:
    """The model a checkpoint describes, with its weights, in eval mode."""
    try:
        config = make_config(ModelConfig, payload.get("model_config") or {})
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = TemporalModel(config)
    try:
        model.load_state_dict(payload["model_state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match model_config ({first})") from None
    return model.eval()
