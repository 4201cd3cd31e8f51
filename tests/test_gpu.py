"""On a CUDA GPU: the packed cuDNN LSTM against the CPU path, the LSTM's dtype under each precision, mixed
precision training steps, and exact-enough resume. Skipped without CUDA; run them with

    python -m pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from conftest import TINY_TRAINING
from vidtempo import EnhancedTemporalModelTrainer, SuperEnhancedTemporalModel
from vidtempo.runtime import NATIVE_BF16_CAPABILITY, PrecisionPlan
from vidtempo.features.synthetic import write_synthetic_features

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GPU_MODEL = {"hidden_dim": 64, "num_lstm_layers": 2, "num_attention_heads": 4, "dropout": 0.1}
LSTM_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _needs_native_bf16(precision: str) -> None:
    if precision in ("bf16", "tf32") and torch.cuda.get_device_capability() < NATIVE_BF16_CAPABILITY:
        pytest.skip(f"{precision} needs compute capability 8.0 or later")


@pytest.fixture
def strict_fp32():
    """TF32 off for the test (PyTorch leaves it on for cuDNN), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    PrecisionPlan("fp32", "test", "cuda").apply_float32_math()
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _model_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = SuperEnhancedTemporalModel(feature_dim=32, hidden_dim=48, num_classes=4, num_lstm_layers=2,
                                       num_attention_heads=4, dropout=0.2).eval()
    x = torch.randn(6, 20, 32)
    lengths = torch.tensor([20, 3, 17, 9, 1, 12])
    return model, x, lengths


def test_packed_cudnn_lstm_matches_the_cpu_path_in_fp32(strict_fp32):
    model, x, lengths = _model_and_batch()
    with torch.no_grad():
        on_cpu = model.encode(x, lengths)
        gpu_model = model.to("cuda")
        on_gpu = gpu_model.encode(x.cuda(), lengths)
    for cpu_part, gpu_part in zip(on_cpu, on_gpu):
        torch.testing.assert_close(gpu_part.cpu(), cpu_part, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_the_lstm_runs_in_the_dtype_the_run_chose(precision):
    """Autocast's cuDNN RNN wrapper would run the LSTM in fp16 under bf16 autocast; vidtempo's does not,
    and it hands cuDNN weights in cuDNN's own layout (no per-call compaction warning)."""
    _needs_native_bf16(precision)
    plan = PrecisionPlan(precision, "test", "cuda")
    model, x, lengths = _model_and_batch()
    model = model.cuda().train()
    seen = []
    model.attention.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with plan.autocast():
            logits = model(x.cuda(), lengths)
        plan.backward(logits.float().logsumexp(-1).mean())
    assert seen == [LSTM_DTYPES[precision]]
    assert not [w for w in caught if "contiguous chunk" in str(w.message)], [str(w.message) for w in caught]
    assert all(p.grad is not None and p.grad.dtype is torch.float32 for p in model.lstm.parameters())


def _trainer(features, output, precision, **training):
    return EnhancedTemporalModelTrainer(features, output, device="cuda", model_config=GPU_MODEL,
                                        training_config={**TINY_TRAINING, "precision": precision, **training},
                                        quiet=True)


@pytest.fixture(scope="module")
def gpu_features(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_features")
    write_synthetic_features(folder, videos_per_split={"train": 128, "val": 32, "test": 32}, feature_dim=16,
                             min_frames=12, max_frames=24)
    return folder


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_is_finite_and_learns(gpu_features, tmp_path, precision):
    _needs_native_bf16(precision)
    _, results = _trainer(gpu_features, tmp_path / "c", precision).train_single_model(
        num_epochs=6, model_name="m", results_dir=tmp_path / "r")
    losses = results["history"]["train_loss"]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses
    record = json.loads((tmp_path / "c" / "m_config.json").read_text())
    assert record["precision"] == precision and record["device"].startswith("cuda")
    best = torch.load(tmp_path / "c" / "best_m.pt", weights_only=True)
    assert ("grad_scaler_state_dict" in best) == (precision == "fp16")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resume_on_the_gpu_ends_where_the_uncut_run_ends(gpu_features, tmp_path, precision):
    """cuDNN and atomics make GPU runs close, not bit-exact; the scaler's state must carry over exactly."""
    settings = dict(checkpoint_every=2)
    uncut = _trainer(gpu_features, tmp_path / "a", precision, **settings)
    _, uncut_results = uncut.train_single_model(num_epochs=5, model_name="m", results_dir=tmp_path / "ra")
    _trainer(gpu_features, tmp_path / "b", precision, **settings).train_single_model(
        num_epochs=3, model_name="m", results_dir=tmp_path / "rb")
    checkpoint = tmp_path / "b" / "m_checkpoint_epoch_2.pt"
    _, resumed_results = _trainer(gpu_features, tmp_path / "b", precision, **settings).train_single_model(
        num_epochs=5, model_name="m", results_dir=tmp_path / "rb", resume_from=checkpoint)
    for key in ("train_loss", "val_loss"):
        assert resumed_results["history"][key] == pytest.approx(uncut_results["history"][key], rel=2e-3, abs=2e-3)
    uncut_last = torch.load(tmp_path / "a" / "m_checkpoint_epoch_4.pt", weights_only=True)
    resumed_last = torch.load(tmp_path / "b" / "m_checkpoint_epoch_4.pt", weights_only=True)
    for name, tensor in uncut_last["model_state_dict"].items():
        torch.testing.assert_close(resumed_last["model_state_dict"][name], tensor, atol=2e-3, rtol=2e-3)
    if precision == "fp16":
        assert resumed_last["grad_scaler_state_dict"]["scale"] == uncut_last["grad_scaler_state_dict"]["scale"]
