"""Checkpoints load as plain data; anything that needs pickle is refused and never runs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtempo.checkpoint import load_checkpoint, save_checkpoint
from vidtempo.errors import CheckpointError


class Payload:
    """Unpickling this object would create a file: the proof that code ran."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    payload = Payload()
    payload.marker = marker
    torch.save({"model_state_dict": {}, "metrics": payload}, path)


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "best_evil.pt"
    write_malicious_checkpoint(path, marker)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_saved_checkpoints_are_plain_and_atomic(tmp_path):
    path = save_checkpoint({"model_state_dict": {"w": torch.ones(2)}, "history": {"a": [1.0]}}, tmp_path / "x.pt")
    assert torch.load(path, weights_only=True)["history"] == {"a": [1.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_checkpoints_are_written_without_checksums_and_read_back_exactly(tmp_path):
    """torch never verifies the zip CRC-32 it writes, and computing it took 40% of torch.save's own time for a
    full model's checkpoint: vidtempo's writes skip it, and a process's own torch.save keeps it."""
    from torch.utils.serialization import config

    weights = {"w": torch.randn(64, 32), "b": torch.arange(5)}
    path = save_checkpoint({"model_state_dict": weights}, tmp_path / "x.pt")
    with zipfile.ZipFile(path) as archive:
        crcs = {info.filename.rsplit("/", 1)[-1]: info.CRC for info in archive.infolist()}
    assert crcs["0"] == 0 and crcs["1"] == 0  # the tensors' data records
    for mmap in (False, True):
        loaded = load_checkpoint(path, mmap=mmap)["model_state_dict"]
        assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert config.save.compute_crc32 is True
    torch.save(weights, tmp_path / "own.pt")
    with zipfile.ZipFile(tmp_path / "own.pt") as archive:
        assert archive.testzip() is None  # CRC-32s present and right


def test_numpy_numbers_in_seed_checkpoints_load(tmp_path):
    """The seed system stored metrics computed with numpy; those numbers are data, not code."""
    metrics = {"accuracy": np.float64(91.9), "per_class_f1": np.array([90.0, 80.5]), "n": np.int64(3)}
    torch.save({"model_state_dict": {"w": torch.zeros(1)}, "metrics": metrics}, tmp_path / "seed.pt")
    loaded = load_checkpoint(tmp_path / "seed.pt")["metrics"]
    assert loaded["accuracy"] == 91.9 and loaded["per_class_f1"].tolist() == [90.0, 80.5]


@pytest.mark.parametrize("junk", [b"not a checkpoint", b"junk\n", b"\x80\x02}q\x00(X"], ids=["text", "word", "cut"])
def test_unreadable_checkpoints_are_refused(tmp_path, junk):
    (tmp_path / "junk.pt").write_bytes(junk)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "before torch 1.6"])
def test_a_mapped_checkpoint_loads_the_same_as_a_read_one(tmp_path, zip_format):
    payload = {"model_state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "optimizer_state_dict": {"m": torch.ones(4)},
               "metrics": {"accuracy": 90.0}}
    torch.save(payload, tmp_path / "c.pt", _use_new_zipfile_serialization=zip_format)
    mapped, read = load_checkpoint(tmp_path / "c.pt", mmap=True), load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(mapped["model_state_dict"]["w"], read["model_state_dict"]["w"])
    assert torch.equal(mapped["optimizer_state_dict"]["m"], payload["optimizer_state_dict"]["m"])
    assert mapped["metrics"] == read["metrics"] == payload["metrics"]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", mmap=True)


def test_a_background_write_holds_the_state_it_was_given(tmp_path):
    """Training goes on while a checkpoint is written: the file holds the weights and history of the moment
    it was asked for, not what the next steps changed in place."""
    import threading

    from vidtempo import checkpoint
    from vidtempo.checkpoint import CheckpointWriter

    stepped = threading.Event()
    save = checkpoint.save_checkpoint

    def save_after_the_next_step(payload, path):
        assert stepped.wait(timeout=30)
        return save(payload, path)

    weights, history = torch.zeros(1000, 100), {"val_acc": [50.0]}
    writer = CheckpointWriter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint, "save_checkpoint", save_after_the_next_step)
        writer.write({"model_state_dict": {"w": weights}, "history": history}, tmp_path / "best.pt")
        weights.add_(1.0)  # the next training step, before the write has started
        history["val_acc"].append(60.0)
        stepped.set()
        writer.wait()
    saved = load_checkpoint(tmp_path / "best.pt")
    assert torch.equal(saved["model_state_dict"]["w"], torch.zeros(1000, 100))
    assert saved["history"] == {"val_acc": [50.0]}
    model = torch.nn.Linear(3, 2)
    writer.write({"model_state_dict": model.state_dict()}, tmp_path / "best.pt")
    writer.wait()  # a state dict keeps what torch.save keeps of it: its order and module versions
    assert load_checkpoint(tmp_path / "best.pt")["model_state_dict"]._metadata == model.state_dict()._metadata
    (tmp_path / "old").write_text("pruned once the write is done")
    writer.write({"model_state_dict": {"w": weights}}, tmp_path / "best.pt", then=lambda: (tmp_path / "old").unlink())
    writer.close()
    assert torch.equal(load_checkpoint(tmp_path / "best.pt")["model_state_dict"]["w"], weights)
    assert not (tmp_path / "old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_a_failed_background_write_is_raised_by_the_next_call(tmp_path):
    import threading

    from vidtempo.checkpoint import CheckpointWriter

    (tmp_path / "not_a_folder").write_text("a file where the checkpoint folder should be")
    writer = CheckpointWriter()
    writer.write({"model_state_dict": {"w": torch.ones(2)}}, tmp_path / "not_a_folder" / "best.pt")
    with pytest.raises(OSError):
        writer.wait()
    writer.wait()  # raised once; the writer is usable again
    writer.write({"model_state_dict": {"w": torch.ones(2)}}, tmp_path / "best.pt")
    writer.close()  # waits, and ends the thread
    assert torch.equal(load_checkpoint(tmp_path / "best.pt")["model_state_dict"]["w"], torch.ones(2))
    assert not [t for t in threading.enumerate() if t.name.startswith("vidtempo-checkpoint")]
