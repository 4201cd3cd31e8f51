"""Splits over the in-memory limit stream from the file: same data, bounded memory, workers, training."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import TINY_MODEL, TINY_TRAINING
from vidtempo import EnhancedTemporalModelTrainer
from vidtempo.training.data import FeatureDataset, collate_features, make_loader
from vidtempo.features.store import H5Features, default_max_in_memory_bytes, read_split, read_splits, split_path

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def both(small_features):
    """The small train split read twice: into memory and streamed."""
    path = split_path(small_features, "train", "_multiscale")
    memory, streamed = read_split(path), read_split(path, max_in_memory_bytes=0)
    assert not memory.streamed and streamed.streamed
    yield memory, streamed
    streamed.features.close()


def test_streamed_split_reads_exactly_what_memory_holds(both):
    memory, streamed = both
    mem, lazy = memory.features, streamed.features
    assert isinstance(lazy, H5Features)
    assert lazy.shape == mem.shape and lazy.dtype == mem.dtype == np.float32 and len(lazy) == len(mem)
    assert (streamed.num_videos, streamed.max_frames, streamed.feature_dim) == (memory.num_videos,
                                                                                 memory.max_frames, memory.feature_dim)
    np.testing.assert_array_equal(streamed.labels, memory.labels)
    np.testing.assert_array_equal(streamed.num_frames, memory.num_frames)
    n = len(mem)
    for i in (0, 1, n - 1, -1, np.int64(5)):
        length = int(memory.num_frames[i])
        np.testing.assert_array_equal(lazy[i, :length], mem[i, :length])
        np.testing.assert_array_equal(lazy[i], mem[i])
    for start in range(0, n, 40):  # row blocks, the last one short (numpy clips the slice end)
        np.testing.assert_array_equal(lazy[start : start + 40], mem[start : start + 40])
    for key in (np.s_[3:9, :5], np.s_[..., 2], np.s_[2, -3:], np.s_[::7], np.s_[[5, 1, 5, -1]], np.s_[7, ::2, 1],
                np.s_[memory.labels == 1], np.s_[10:10]):
        np.testing.assert_array_equal(lazy[key], mem[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(lazy), mem)
    with pytest.raises(IndexError):
        lazy[n]
    copy = pickle.loads(pickle.dumps(lazy))  # what a spawned DataLoader worker receives: path and settings
    np.testing.assert_array_equal(copy[4:8], mem[4:8])
    copy.close()
    # FeatureDataset items and loader batches are the same.
    for augment in (False, True):
        a, b = FeatureDataset(memory, augment=augment), FeatureDataset(streamed, augment=augment)
        for i in range(0, len(a), 7):
            torch.manual_seed(i)
            item_a = a[i]
            torch.manual_seed(i)
            item_b = b[i]
            assert torch.equal(item_a[0], item_b[0]) and item_a[1:] == item_b[1:]
    for (fa, la, na), (fb, lb, nb) in zip(make_loader(memory, 32, 0), make_loader(streamed, 32, 0), strict=True):
        assert torch.equal(fa, fb) and torch.equal(la, lb) and torch.equal(na, nb)


def test_limit_decides_memory_or_streaming(small_features):
    path = split_path(small_features, "val", "_multiscale")
    size = read_split(path).features.nbytes
    assert not read_split(path, max_in_memory_bytes=size).streamed
    assert read_split(path, max_in_memory_bytes=size - 1).streamed
    assert not read_split(path).streamed  # a small file fits under the automatic limit
    assert 0 < default_max_in_memory_bytes()
    splits = read_splits(small_features, "_multiscale", max_in_memory_bytes=0)
    assert all(s.streamed for s in splits.values())


def test_workers_open_their_own_handles(both):
    memory, streamed = both
    streamed.features[0, :2]  # the parent holds an open handle before the workers fork
    expected = list(make_loader(memory, 16, 0))
    loader = DataLoader(FeatureDataset(streamed), batch_size=16, num_workers=2, collate_fn=collate_features)
    got = list(loader)
    assert len(got) == len(expected)
    for (fa, la, na), (fb, lb, nb) in zip(expected, got):
        assert torch.equal(fa, fb) and torch.equal(la, lb) and torch.equal(na, nb)
    np.testing.assert_array_equal(streamed.features[3:5], memory.features[3:5])  # the parent's handle still works


@pytest.mark.slow
def test_training_on_streamed_splits_gives_the_same_weights(small_features, tmp_path):
    def train(name, **training):
        trainer = EnhancedTemporalModelTrainer(small_features, tmp_path / name, device="cpu", model_config=TINY_MODEL,
                                               training_config={**TINY_TRAINING, **training}, quiet=True)
        model, _ = trainer.train_single_model(num_epochs=2, model_name="m", results_dir=tmp_path / f"r_{name}")
        return trainer, model

    memory_trainer, memory_model = train("memory")
    streamed_trainer, streamed_model = train("streamed", max_in_memory_gb=0.0)
    assert not any(s.streamed for s in memory_trainer.splits.values())
    assert all(s.streamed for s in streamed_trainer.splits.values())
    for (name, a), b in zip(memory_model.state_dict().items(), streamed_model.state_dict().values()):
        assert torch.equal(a, b), name


# Writes a ~328 MB (uncompressed float32) split in blocks, so the writer itself needs little memory.
_WRITE = """
import json, sys
import h5py, numpy as np
path, n, t, d = sys.argv[1], *map(int, sys.argv[2:5])
rng = np.random.default_rng(0)
lengths = rng.integers(t // 2, t + 1, size=n).astype(np.int32)
sums = np.zeros(n)
with h5py.File(path, "w") as f:
    feats = f.create_dataset("features", shape=(n, t, d), dtype=np.float32, chunks=(1, t, d))
    for start in range(0, n, 250):
        block = rng.random((min(250, n - start), t, d), dtype=np.float32)
        block[np.arange(t)[None, :] >= lengths[start : start + len(block), None]] = 0
        feats[start : start + len(block)] = block
        sums[start : start + len(block)] = block.sum(axis=(1, 2), dtype=np.float64)
    f.create_dataset("labels", data=np.arange(n) % 4)
    f.create_dataset("num_frames", data=lengths)
    f.attrs.update(num_videos=n, max_frames=t, feature_dim=d, multi_scale=False,
                   category_mapping=json.dumps({"a": 0, "b": 1, "c": 2, "d": 3}))
np.save(path + ".sums.npy", sums)
"""

# Reads it under a limit far below its size and prints the peak RSS growth (after imports) it caused; then,
# as a control that the measurement sees memory, the growth from reading it into memory.
_READ = """
import json, resource, sys
import numpy as np, torch
from vidtempo.training.data import FeatureDataset, collate_features
from vidtempo.features.store import read_split
from torch.utils.data import DataLoader
torch.set_num_threads(1)
path, limit = sys.argv[1], int(sys.argv[2])
expected = np.load(path + ".sums.npy")

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

def start():
    # Reset the peak (VmHWM) to the current RSS where Linux allows it; else growth counts from the
    # peak so far (ru_maxrss), which can only under-report what follows if imports peaked higher.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status("VmRSS"), True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False

def growth(base, reset):
    peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak - base

base, reset = start()
split = read_split(path, max_in_memory_bytes=limit)
assert split.streamed
sums = []
for features, labels, lengths in DataLoader(FeatureDataset(split), batch_size=64, num_workers=0,
                                            collate_fn=collate_features):
    sums.append(features.numpy().sum(axis=(1, 2), dtype=np.float64))
np.testing.assert_allclose(np.concatenate(sums), expected, rtol=1e-6)
block_sums = [split.features[s : s + 256].sum(axis=(1, 2), dtype=np.float64) for s in range(0, split.num_videos, 256)]
np.testing.assert_allclose(np.concatenate(block_sums), expected, rtol=1e-9)
streamed = growth(base, reset)
nbytes = split.features.nbytes
del split
base, reset = start()
split = read_split(path, max_in_memory_bytes=2 * nbytes)
assert not split.streamed
print(json.dumps({"growth": streamed, "in_memory_growth": growth(base, reset), "reset": reset, "nbytes": nbytes}))
"""


@pytest.mark.slow
def test_streaming_keeps_memory_bounded(tmp_path):
    path = tmp_path / "train_features.h5"
    n, t, d = 2500, 64, 512  # 327.7 MB as float32
    # A fixed mmap threshold stops glibc from raising it after large frees and then keeping freed buffers
    # in the heap, so RSS measures live memory (without it a loop that allocates a fresh 16 MB tensor per
    # batch "grows" by hundreds of MB on some runs, in-memory splits included).
    env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    subprocess.run([sys.executable, "-c", _WRITE, str(path), str(n), str(t), str(d)], check=True, env=env,
                   timeout=120)
    nbytes = n * t * d * 4
    assert path.stat().st_size > nbytes
    limit = 64 * 2**20
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_READ), str(path), str(limit)], check=True, env=env,
                         capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nbytes"] == nbytes
    print(f"peak RSS growth {result['growth'] / 2**20:.0f} MiB streaming a {nbytes / 2**20:.0f} MiB split, "
          f"{result['in_memory_growth'] / 2**20:.0f} MiB loading it (peak reset: {result['reset']})")
    assert result["growth"] < 0.4 * nbytes, result
    if result["reset"]:  # the control: the same measurement sees a split loaded into memory
        assert result["in_memory_growth"] > 0.9 * nbytes, result
