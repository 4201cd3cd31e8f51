"""Precision: what each choice means on each device, and the fp16 gradient scaler's plumbing."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING
from helpers import assert_refused, vidtempo
from vidtempo.checkpoint import load_checkpoint, save_checkpoint
from vidtempo.config import TrainingConfig
from vidtempo.errors import ConfigError
from vidtempo.runtime import PrecisionPlan, choose_precision


@pytest.mark.parametrize("capability, expected", [
    ((6, 1), "fp32"),  # Pascal: no tensor cores
    ((7, 0), "fp16"),  # V100: fp16 tensor cores, bf16 only emulated
    ((7, 5), "fp16"),  # T4
    ((8, 0), "bf16"),  # A100, the seed's GPU
    ((8, 9), "bf16"),  # L4
    ((9, 0), "bf16"),  # H100
])
def test_auto_on_a_gpu_follows_native_support(capability, expected):
    name, reason = choose_precision("auto", "cuda", capability)
    assert name == expected
    assert f"compute capability {capability[0]}.{capability[1]}" in reason
    assert ("gradient scaler" in reason) == (expected == "fp16")


@pytest.mark.parametrize("fast_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_uses_bf16_only_where_it_is_fast(fast_bf16, expected):
    name, reason = choose_precision("auto", "cpu", cpu_fast_bf16=fast_bf16)
    assert name == expected and reason.startswith("auto:")


@pytest.mark.parametrize("requested, capability", [
    ("fp32", (7, 5)), ("fp32", (9, 0)), ("fp16", (7, 5)), ("fp16", (8, 0)), ("tf32", (8, 0)), ("bf16", (8, 6)),
])
def test_explicit_choices_on_a_gpu_that_can_honour_them(requested, capability):
    name, reason = choose_precision(requested, "cuda", capability)
    assert name == requested and reason.startswith("requested:")


@pytest.mark.parametrize("requested", ["bf16", "tf32"])
def test_bf16_and_tf32_are_refused_before_compute_capability_8(requested):
    with pytest.raises(ConfigError, match=rf"precision {requested} needs .* 8\.0 or later, this one has 7\.5"):
        choose_precision(requested, "cuda", (7, 5))


@pytest.mark.parametrize("requested", ["fp16", "tf32"])
def test_gpu_only_choices_are_refused_on_the_cpu(requested):
    with pytest.raises(ConfigError, match=f"precision {requested} needs a CUDA GPU"):
        choose_precision(requested, "cpu", cpu_fast_bf16=True)


def test_explicit_choices_on_the_cpu():
    assert choose_precision("fp32", "cpu", cpu_fast_bf16=True)[0] == "fp32"
    assert choose_precision("bf16", "cpu", cpu_fast_bf16=True) == ("bf16", "requested: bf16 autocast")
    name, reason = choose_precision("bf16", "cpu", cpu_fast_bf16=False)
    assert name == "bf16" and "emulated" in reason


def test_unknown_precision_is_refused_by_the_config_and_the_decision():
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, tf32, bf16, fp16"):
        TrainingConfig(precision="fp8")
    with pytest.raises(ConfigError, match="precision must be one of"):
        choose_precision("half", "cpu")
    assert TrainingConfig(precision="fp16").precision == "fp16"  # valid; the device decides at run time


def test_plan_for_this_cpu():
    plan = PrecisionPlan.for_device("fp32", torch.device("cpu"))
    assert plan.amp_dtype is None and plan.scaler is None and plan.checkpoint_entries() == {}
    assert plan.record() == {"precision": "fp32", "precision_reason": "requested: fp32"}
    bf16 = PrecisionPlan.for_device("bf16", torch.device("cpu"))
    with bf16.autocast():
        assert torch.get_autocast_dtype("cpu") is torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_fp32_and_tf32_set_the_cuda_tf32_switches():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        PrecisionPlan("tf32", "test", "cuda").apply_float32_math()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        PrecisionPlan("fp32", "test", "cuda").apply_float32_math()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = True
        PrecisionPlan("bf16", "test", "cuda").apply_float32_math()  # autocast runs leave them alone
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# The scaler's plumbing, device-independent: GradScaler("cpu") is the same class the GPU uses. fp16 is
# refused for CPU runs (choose_precision); these tests build the plan directly and do not autocast.
def _regression(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1), x, y


def _fp16_plan():
    return PrecisionPlan("fp16", "test", "cpu")


def test_scaled_step_unscales_before_clipping():
    """The scale is a power of two, so a scaled step after unscaling equals the plain step exactly;
    clipping a still-scaled gradient would shrink the update by the scale instead."""
    results = []
    for plan in (PrecisionPlan("fp32", "test", "cpu"), _fp16_plan()):
        model, optimizer, x, y = _regression()
        loss = torch.nn.functional.mse_loss(model(x), y) * 100  # a gradient norm well above the clip
        plan.backward(loss)
        plan.step(optimizer, model.parameters(), max_norm=1.0)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)


def test_an_overflowing_step_is_skipped_and_the_scale_shrinks():
    plan = _fp16_plan()
    model, optimizer, x, y = _regression()
    before = [p.detach().clone() for p in model.parameters()]
    plan.backward(torch.nn.functional.mse_loss(model(x), y) * float("inf"))
    plan.step(optimizer, model.parameters(), max_norm=1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert plan.scaler.get_scale() == 32768.0


def test_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    plan = _fp16_plan()
    model, optimizer, x, y = _regression()
    for scale_loss in (float("inf"), 1.0, 1.0):
        optimizer.zero_grad()
        plan.backward(torch.nn.functional.mse_loss(model(x), y) * scale_loss)
        plan.step(optimizer, model.parameters(), max_norm=1.0)
    save_checkpoint({"model_state_dict": model.state_dict(), **plan.checkpoint_entries()}, tmp_path / "c.pt")
    payload = load_checkpoint(tmp_path / "c.pt")  # weights_only
    assert torch.load(tmp_path / "c.pt", weights_only=True)["grad_scaler_state_dict"]["scale"] == 32768.0
    restored = _fp16_plan()
    restored.load_checkpoint_entries(payload)
    assert restored.scaler.state_dict() == plan.scaler.state_dict()
    fresh = _fp16_plan()
    fresh.load_checkpoint_entries({"epoch": 0})  # saved by a run without a scaler: start afresh
    assert fresh.scaler.get_scale() == 65536.0


@pytest.mark.slow  # a command line in a new process
def test_a_gpu_only_precision_on_the_cpu_is_one_line(small_features, tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    (tmp_path / "training.json").write_text(json.dumps(TINY_TRAINING))
    result = vidtempo("train", "--features-dir", small_features, "--output-dir", tmp_path / "ckpt",
                      "--num-models", 1, "--epochs", 1, "--model-config", tmp_path / "model.json",
                      "--training-config", tmp_path / "training.json", "--precision", "fp16", "--device", "cpu",
                      "--quiet")
    assert_refused(result, "precision fp16 needs a CUDA GPU")
    assert not list((tmp_path / "ckpt").glob("*.pt"))
