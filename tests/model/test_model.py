"""SuperEnhancedTemporalModel: the documented architecture, and predictions independent of padding."""

from __future__ import annotations

import pytest
import torch

from vidtempo import SuperEnhancedTemporalModel
from vidtempo.model.temporal import cast_weights, padding_mask

# Names and shapes of the seed system's checkpoints (D = 1280, 4 classes), outside the LSTM.
SEED_SHAPES = {
    "input_projection.0.weight": (768, 1280), "input_projection.1.weight": (768,),
    "attention.in_proj_weight": (4608, 1536), "attention.out_proj.weight": (1536, 1536),
    "attention_norm.weight": (1536,),
    "attention_pooling.0.weight": (768, 1536), "attention_pooling.1.weight": (768,),
    "attention_pooling.4.weight": (1, 768),
    "classifier.0.weight": (768, 1536), "classifier.1.weight": (768,), "classifier.4.weight": (512, 768),
    "classifier.5.weight": (512,), "classifier.8.weight": (256, 512), "classifier.9.weight": (256,),
    "classifier.12.weight": (4, 256),
    "lstm.weight_ih_l0": (3072, 768), "lstm.weight_ih_l0_reverse": (3072, 768),
    "lstm.weight_ih_l3": (3072, 1536), "lstm.weight_hh_l3_reverse": (3072, 768),
}


def test_default_architecture_matches_the_seed():
    model = SuperEnhancedTemporalModel(feature_dim=1280, hidden_dim=768, num_classes=4, num_lstm_layers=4,
                                       num_attention_heads=12, dropout=0.4, bidirectional=True)
    assert sum(p.numel() for p in model.parameters()) == 65_277_701
    state = model.state_dict()
    for name, shape in SEED_SHAPES.items():
        assert tuple(state[name].shape) == shape, name
    assert not any(k.startswith("lstm.") and "_l4" in k for k in state), "exactly four LSTM layers"
    # A state dict with the seed's names loads strictly into a fresh model.
    SuperEnhancedTemporalModel().load_state_dict(state, strict=True)


def test_initialisation_follows_the_seed():
    model = SuperEnhancedTemporalModel(feature_dim=16, hidden_dim=12, num_classes=3, num_lstm_layers=1,
                                       num_attention_heads=2)
    assert torch.all(model.classifier[0].bias == 0)
    assert torch.all(model.attention_norm.weight == 1) and torch.all(model.attention_norm.bias == 0)
    bound = (6 / (16 + 12)) ** 0.5  # Xavier-uniform for Linear(16, 12)
    assert model.input_projection[0].weight.abs().max() <= bound


def _tiny(seed=0):
    torch.manual_seed(seed)
    return SuperEnhancedTemporalModel(feature_dim=10, hidden_dim=16, num_classes=4, num_lstm_layers=2,
                                      num_attention_heads=4, dropout=0.3).eval()


def test_forward_returns_logits():
    model = _tiny()
    logits = model(torch.randn(3, 7, 10), torch.tensor([7, 2, 5]))
    assert logits.shape == (3, 4)
    assert model(torch.randn(2, 5, 10)).shape == (2, 4), "lengths=None treats every step as valid"


def test_padding_never_changes_a_prediction():
    model = _tiny()
    torch.manual_seed(1)
    video = torch.randn(1, 6, 10)
    with torch.no_grad():
        alone = model(video, torch.tensor([6]))
        batch = torch.randn(3, 20, 10)
        batch[1, :] = 0
        batch[1, :6] = video[0]
        in_batch = model(batch, torch.tensor([20, 6, 13]))[1:2]
        garbage = torch.cat([video, 1e3 * torch.randn(1, 9, 10)], dim=1)
        with_garbage = model(garbage, torch.tensor([6]))
        _, weights = model.encode(garbage, torch.tensor([6]))
    torch.testing.assert_close(in_batch, alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(with_garbage, alone, atol=1e-4, rtol=0)
    assert torch.all(weights[0, 6:] == 0) and abs(float(weights[0].sum()) - 1) < 1e-5


def _lstm_and_its_packed_output():
    """A tiny model, a padded batch of LSTM inputs, and nn.LSTM's output for it on packed sequences."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    model = _tiny()
    torch.manual_seed(3)
    h = torch.randn(4, 11, 16)
    lengths = torch.tensor([11, 4, 7, 1])
    packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        expected, _ = pad_packed_sequence(model.lstm(packed)[0], batch_first=True, total_length=11)
    return model, h, lengths, expected


def test_cpu_lstm_path_equals_the_packed_lstm():
    """On the CPU the LSTM runs per layer and direction on the padded batch; same numbers as packing."""
    model, h, lengths, expected = _lstm_and_its_packed_output()
    with torch.no_grad():
        padded = model._lstm_padded(h, lengths)
    for row, length in enumerate(lengths):
        torch.testing.assert_close(padded[row, :length], expected[row, :length], atol=1e-5, rtol=0)


def test_cpu_lstm_path_has_the_packed_lstms_gradients():
    """Training on the CPU runs the padded path; its gradients are those of the packed LSTM."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    model = _tiny().train()
    torch.manual_seed(4)
    h = torch.randn(4, 11, 16)
    lengths = torch.tensor([11, 4, 7, 1])
    valid = ~padding_mask(lengths, 11)
    target = torch.randn(4, 11, 32)  # a loss that weighs every output step differently

    def gradients(run_lstm):
        model.zero_grad()
        inputs = h.clone().requires_grad_(True)
        (run_lstm(inputs)[valid] * target[valid]).sum().backward()
        return inputs.grad, {name: p.grad.clone() for name, p in model.lstm.named_parameters()}

    def packed(inputs):
        packed_inputs = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(model.lstm(packed_inputs)[0], batch_first=True, total_length=11)[0]

    model.lstm.dropout = 0.0  # between layers: random, so the two runs would differ
    input_grad, weight_grads = gradients(lambda inputs: model._lstm_padded(inputs, lengths))
    expected_input_grad, expected_weight_grads = gradients(packed)
    torch.testing.assert_close(input_grad, expected_input_grad, atol=1e-5, rtol=1e-4)
    assert torch.all(input_grad[~valid] == 0), "padding gets no gradient"
    for name, grad in weight_grads.items():
        torch.testing.assert_close(grad, expected_weight_grads[name], atol=1e-5, rtol=1e-4, msg=name)


# Softmax ignores a shift of all its scores, so the bias of the last pooling layer gets a zero gradient.
SHIFT_INVARIANT = {"attention_pooling.4.bias"}


def test_training_gradients_reach_every_parameter_and_only_valid_steps():
    model = SuperEnhancedTemporalModel(feature_dim=10, hidden_dim=12, num_classes=4, num_lstm_layers=2,
                                       num_attention_heads=4, dropout=0.0).train()
    torch.manual_seed(5)
    lengths = torch.tensor([9, 3, 6])
    features = torch.randn(3, 9, 10, requires_grad=True)
    logits = model(features, lengths)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2, 3])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.all(torch.isfinite(parameter.grad)), name
        if name in SHIFT_INVARIANT:
            assert parameter.grad.abs().max() < 1e-6, name
        else:
            assert parameter.grad.abs().sum() > 0, f"{name} gets no gradient"
    pad = padding_mask(lengths, 9)
    assert torch.all(features.grad[pad] == 0), "padded steps get exactly zero gradient"
    assert torch.all(features.grad[~pad].abs().sum(-1) > 0), "every valid step gets a gradient"


def test_packed_lstm_path_equals_the_lstm_module():
    """The GPU path (packed sequences, run through the functional LSTM) gives nn.LSTM's numbers."""
    model, h, lengths, expected = _lstm_and_its_packed_output()
    with torch.no_grad():
        torch.testing.assert_close(model._lstm_packed(h, lengths), expected, atol=1e-6, rtol=0)
        in_bf16 = model._lstm_packed(h.bfloat16(), lengths)
    assert in_bf16.dtype is torch.bfloat16
    torch.testing.assert_close(in_bf16.float(), expected, atol=3e-2, rtol=0)


def _lstm_output_dtype(model, x, lengths, dtype):
    """The LSTM output's dtype (captured where attention receives it), the logits, and the gradients."""
    seen = []
    handle = model.attention.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    model.zero_grad()
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(x, lengths)
    logits.float().sum().backward()
    handle.remove()
    return seen[0], logits.detach().float()


@pytest.mark.parametrize("dtype, tolerance", [(None, 0.0), (torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_the_lstm_runs_in_the_autocast_dtype(dtype, tolerance):
    model = _tiny()
    torch.manual_seed(4)
    x, lengths = torch.randn(3, 9, 10), torch.tensor([9, 6, 2])
    _, reference = _lstm_output_dtype(model, x, lengths, None)
    lstm_dtype, logits = _lstm_output_dtype(model, x, lengths, dtype)
    assert lstm_dtype is (dtype or torch.float32)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, reference, atol=tolerance, rtol=0)
    grads = [p.grad for p in model.lstm.parameters()]
    assert all(g is not None and g.dtype is torch.float32 and torch.isfinite(g).all() for g in grads)


def test_an_fp32_input_still_runs_the_lstm_in_the_autocast_dtype():
    """On a GPU, LayerNorm hands the LSTM float32 under autocast; the LSTM still runs in autocast's dtype."""
    model = _tiny()
    h, lengths = torch.randn(2, 5, 16), torch.tensor([5, 3])
    pad = padding_mask(lengths, 5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model._run_lstm(h, lengths, pad).dtype is torch.bfloat16
    with torch.no_grad():
        assert model._run_lstm(h, lengths, pad).dtype is torch.float32


def test_cast_weights_keep_the_layout_of_a_shared_buffer():
    """Weights that are views into one buffer (cuDNN's layout) are cast into one new buffer, same offsets."""
    buffer = torch.randn(30, requires_grad=True)
    views = [buffer[0:12].view(3, 4), buffer[16:20], buffer[12:16]]  # out of order, unused tail 20..29
    cast = cast_weights(views, torch.bfloat16)
    assert {c.untyped_storage().data_ptr() for c in cast} == {cast[0].untyped_storage().data_ptr()}
    assert [c.storage_offset() for c in cast] == [0, 16, 12]
    assert cast[0].untyped_storage().nbytes() == 30 * 2
    for c, v in zip(cast, views):
        assert c.dtype is torch.bfloat16 and torch.equal(c, v.detach().bfloat16())
    sum(c.float().sum() * (i + 1) for i, c in enumerate(cast)).backward()
    expected = torch.zeros(30)
    expected[0:12], expected[16:20], expected[12:16] = 1, 2, 3
    torch.testing.assert_close(buffer.grad, expected)
    separate = cast_weights([torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)], torch.half)
    assert all(c.dtype is torch.float16 and c.requires_grad for c in separate)


def test_the_model_is_built_from_its_config_and_the_seed_signature_builds_the_same():
    from vidtempo.config import ModelConfig
    from vidtempo.model.temporal import TemporalModel

    config = ModelConfig(feature_dim=10, hidden_dim=16, num_classes=4, num_lstm_layers=2, num_attention_heads=4,
                         dropout=0.3)
    torch.manual_seed(0)
    from_config = TemporalModel(config)
    seed_style = _tiny(seed=0)
    assert from_config.config == seed_style.config == config
    assert isinstance(seed_style, TemporalModel)
    for (name, a), (other, b) in zip(from_config.state_dict().items(), seed_style.state_dict().items()):
        assert name == other and torch.equal(a, b), name
    rebuilt = SuperEnhancedTemporalModel.from_config(config)
    assert type(rebuilt) is SuperEnhancedTemporalModel and rebuilt.config == config
