"""A user's mistakes get one line naming the file, flag or field, exit status 2, before any work is done."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from vidtempo.cli import main
from vidtempo.config import ModelConfig, TrainingConfig, load_config_file
from vidtempo.errors import ConfigError


def run(capsys, *argv) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_one_line(status: int, err: str, *needles: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidtempo: error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("cls, settings, words", [
    (ModelConfig, {"hidden_dim": "big"}, "model_config.hidden_dim must be an integer, got \"big\""),
    (TrainingConfig, {"learning_rate": "fast"}, "training_config.learning_rate must be a number, got \"fast\""),
    (TrainingConfig, {"batch_size": True}, "training_config.batch_size must be an integer, got true"),
    (TrainingConfig, {"calibrate": 1}, "training_config.calibrate must be true or false, got 1"),
    (TrainingConfig, {"max_in_memory_gb": "lots"}, "training_config.max_in_memory_gb must be a number or null"),
])
def test_a_config_value_of_the_wrong_type_names_the_file_and_the_field(tmp_path, cls, settings, words):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(ConfigError) as caught:
        load_config_file(path, cls)
    assert str(caught.value) == f"{path}: {words}" or str(caught.value).startswith(f"{path}: {words}")


def test_train_refuses_a_config_of_the_wrong_type_in_one_line(capsys, tmp_path):
    path = tmp_path / "model.json"
    path.write_text('{"hidden_dim": "big"}')
    status, err = run(capsys, "train", "--features-dir", tmp_path, "--output-dir", tmp_path / "out",
                      "--model-config", path)
    assert_one_line(status, err, str(path), "model_config.hidden_dim must be an integer")
    assert not (tmp_path / "out").exists()


def test_configs_are_taken_inline_as_well_as_from_files():
    assert load_config_file('{"hidden_dim": 48}', ModelConfig, "--model-config") == {"hidden_dim": 48}
    with pytest.raises(ConfigError, match=r"^--training-config: training_config.batch_size must be an integer"):
        load_config_file('{"batch_size": 1.5}', TrainingConfig, "--training-config")
    with pytest.raises(ConfigError, match="^--model-config: not readable as JSON"):
        load_config_file('{"hidden_dim": }', ModelConfig, "--model-config")


@pytest.mark.parametrize("flag, value", [("--epochs", 0), ("--batch-size", -2), ("--lr", 0)])
def test_a_bad_flag_is_named_as_the_flag(capsys, tmp_path, flag, value):
    status, err = run(capsys, "train", "--features-dir", tmp_path, "--output-dir", tmp_path / "out", flag, value)
    assert_one_line(status, err, f"{flag} must be")


@pytest.mark.parametrize("port", [99999, -5])
def test_serve_refuses_an_impossible_port_before_loading_any_model(capsys, tmp_path, port):
    status, err = run(capsys, "serve", "--checkpoints", tmp_path / "no_such_checkpoints", "--port", port)
    assert_one_line(status, err, "--port must be between 0 and 65535")


def test_serve_refuses_a_port_in_use_before_loading_any_model(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, err = run(capsys, "serve", "--checkpoints", tmp_path / "no_such_checkpoints", "--port", port)
    assert_one_line(status, err, f"--port {port}: cannot listen on 127.0.0.1:{port}")


def test_demo_refuses_zero_epochs_before_any_work(capsys, tmp_path):
    status, err = run(capsys, "demo", "--output-dir", tmp_path / "demo", "--epochs", 0, "--quiet")
    assert_one_line(status, err, "--epochs must be a positive integer")
    assert not (tmp_path / "demo").exists()


def test_predict_on_a_folder_without_videos_is_refused_and_writes_nothing(capsys, tmp_path):
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "notes.txt").write_text("not a video")
    status, err = run(capsys, "predict", "--videos-dir", tmp_path / "library", "--output", tmp_path / "p.csv",
                      "--checkpoints", tmp_path / "no_such_checkpoints")
    assert_one_line(status, err, "no video files found")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow  # a command line in a new process
def test_a_reader_that_goes_away_ends_the_command_quietly(small_features):
    feature_file = next(small_features.glob("train_features*.h5"))
    process = subprocess.Popen([sys.executable, "-m", "vidtempo", "inspect", str(feature_file), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line is written
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141, err.decode()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()


def test_inspect_names_a_missing_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vidtempo", "inspect", str(tmp_path / "gone.pt")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"vidtempo: error: {tmp_path / 'gone.pt'}: no such checkpoint"
