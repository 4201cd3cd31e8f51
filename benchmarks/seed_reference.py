"""A re-implementation of the seed system's training loop, for speed and accuracy comparisons with vidtempo.

This is NOT part of vidtempo. It mirrors what /work/shared/spec/seed-training.txt and SPEC.md sections 4-5
say the seed's ``model_train_new.py`` did, so ``train_throughput.py`` can time both in one process.

Reproduced from the seed's documentation (documented behaviour):

- float32 throughout (no autocast).
- Split files ``{split}_features_multiscale.h5``; ``WeightedRandomSampler`` with per-sample weight = class
  weight ``N / (C * n_c)`` clipped to [0.5, 10], ``num_samples = N``, with replacement.
- Train-only augmentation for sequences longer than 8: p 0.5 sorted random subset of ``max(int(T*r), 8)``
  frames (r ~ U(0.7, 1)); p 0.3 circular roll by randint(-3, 3); p 0.2 Gaussian noise std 0.01.
- ``collate_features``: zero-pad to the batch's longest sequence, returns ``(features, labels, lengths)``.
- Model: same layers and parameter names as ``vidtempo.SuperEnhancedTemporalModel`` (it subclasses it), the
  LSTM runs over packed sequences (``pack_padded_sequence``), but WITHOUT padding masks: self-attention has
  no ``key_padding_mask`` and the attention pooling's softmax runs over every step, padding included.
- ``FocalLoss(alpha=class_weights, gamma=2, smoothing=0.1)`` (vidtempo's implementation, which follows the
  seed's formula), AdamW(lr 1e-3, betas 0.9/0.999, weight_decay 5e-4), ``clip_grad_norm_(params, 1.0)``.
- ``CosineAnnealingWarmRestarts(T_0=20, T_mult=2, eta_min=1e-6)`` stepped every batch with a bare
  ``scheduler.step()`` -- so its cycles last 20, 40, 80 *batches* (the seed's behaviour; vidtempo passes
  the fractional epoch instead).
- Validation after every epoch (loss, accuracy, weighted F1, per-class F1); best checkpoint saved with
  ``torch.save`` on a strict improvement of validation accuracy (model + optimizer state + metrics);
  early stopping after ``patience`` epochs; at the end the best weights are reloaded and the test split is
  evaluated plain and with 4-view TTA (original, reverse, speed_up, speed_down).

Guesses (not documented for the seed; chosen as the most likely straightforward code):

- The Dataset opens ONE h5py handle at construction (``self.h5 = h5py.File(path, "r")``) and every
  ``__getitem__`` reads ``features[idx, :num_frames[idx]]`` from it, so each item decompresses its gzip
  chunk(s) again, every epoch. Chunking is whatever the file has (vidtempo writes one chunk per video).
- Augmentation draws from numpy's global generator (``np.random``), as seed-era code typically did.
- TTA runs one forward pass per view over the whole batch, each view re-padded to its own longest
  sequence; a view that does not apply to a short video (speed_up needs T > 10, speed_down T > 5) is
  replaced by the original sequence (vidtempo leaves it out of the average instead). Probabilities are the
  mean of the 4 views' softmax outputs.
- Validation / test loaders use the same Dataset class (no augmentation), in order, same batch size.
- Checkpoint writes happen after the epoch's timing (as in vidtempo's ``history["epoch_time"]``, which
  covers train + validation only), so epoch times are comparable; total wall time includes them.
- Threads / workers: ``num_workers`` is a parameter (the seed used 4 on a GPU host; the CPU benchmark uses
  0 for both systems so they compete for the same cores).
"""

from __future__ import annotations

import copy
import os
import random
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.optim import AdamW
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from vidtempo.model.loss import FocalLoss
from vidtempo.ensemble.metrics import classification_metrics
from vidtempo.model.temporal import SuperEnhancedTemporalModel
from vidtempo.features.store import parse_category_mapping
from vidtempo.ensemble.tta import TTA_VIEWS, VIEW_INDICES


# ------------------------------------------------------------------------------------------------ data
class SeedVideoFeatureDataset(Dataset):
    """Per-item reads from the (gzip) HDF5 file through one shared handle, as the seed's code likely did."""

    def __init__(self, h5_path: str | os.PathLike, augment: bool = False) -> None:
        self.h5 = h5py.File(h5_path, "r")
        self.features = self.h5["features"]
        self.labels = self.h5["labels"][()]
        self.num_frames = self.h5["num_frames"][()]
        self.category_mapping = parse_category_mapping(self.h5.attrs["category_mapping"], str(h5_path))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int):
        n = int(self.num_frames[idx])
        seq = torch.from_numpy(self.features[idx, :n].astype(np.float32))
        if self.augment:
            seq = self._augment(seq)
        return seq, int(self.labels[idx]), int(seq.shape[0])

    @staticmethod
    def _augment(seq: torch.Tensor) -> torch.Tensor:
        t = seq.shape[0]
        if t <= 8:
            return seq
        if np.random.random() < 0.5:
            keep = max(int(t * np.random.uniform(0.7, 1.0)), 8)
            idx = np.sort(np.random.choice(t, keep, replace=False))
            seq = seq[torch.from_numpy(idx)]
        if np.random.random() < 0.3:
            seq = torch.roll(seq, int(np.random.randint(-3, 4)), dims=0)
        if np.random.random() < 0.2:
            seq = seq + torch.randn_like(seq) * 0.01
        return seq

    def close(self) -> None:
        self.h5.close()


def collate_features(batch):
    seqs, labels, lengths = zip(*batch)
    lengths = torch.tensor(lengths, dtype=torch.long)
    out = torch.zeros(len(seqs), int(lengths.max()), seqs[0].shape[1])
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, torch.tensor(labels, dtype=torch.long), lengths


def seed_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        w = len(labels) / (num_classes * counts)
    return torch.tensor(np.clip(w, 0.5, 10.0), dtype=torch.float32)


# ----------------------------------------------------------------------------------------------- model
class SeedTemporalModel(SuperEnhancedTemporalModel):
    """vidtempo's model with the seed's unmasked attention and pooling (identical parameters)."""

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        batch, max_len, _ = x.shape
        if lengths is None:
            lengths = torch.full((batch,), max_len, dtype=torch.long)
        h = self.input_projection(x)
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=max_len)
        attended, _ = self.attention(out, out, out)  # no key_padding_mask (seed); weights averaged, as default
        out = self.attention_norm(out + attended)
        weights = torch.softmax(self.attention_pooling(out).squeeze(-1), dim=1)  # over padding too
        pooled = torch.bmm(weights.unsqueeze(1), out).squeeze(1)
        return pooled, weights


# -------------------------------------------------------------------------------------------- training
def _tta_batch(features: torch.Tensor, lengths: torch.Tensor, view: str):
    rows = []
    for b in range(features.shape[0]):
        n = int(lengths[b])
        idx = VIEW_INDICES[view](n)
        rows.append(features[b, idx if idx is not None else torch.arange(n)])  # seed: replaced by original
    view_lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
    out = features.new_zeros(len(rows), int(view_lengths.max()), features.shape[2])
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out, view_lengths


@torch.no_grad()
def evaluate(model, loader, criterion, class_names, device, tta: bool = False) -> dict[str, Any]:
    model.eval()
    total_loss, preds, labels = 0.0, [], []
    for features, targets, lengths in loader:
        features, targets = features.to(device), targets.to(device)
        if tta:
            probs = 0
            for view in TTA_VIEWS:
                vf, vl = _tta_batch(features, lengths, view)
                probs = probs + torch.softmax(model(vf, vl), dim=-1)
            probs = probs / len(TTA_VIEWS)
            pred = probs.argmax(-1)
        else:
            logits = model(features, lengths)
            total_loss += float(criterion(logits, targets)) * targets.shape[0]
            pred = logits.argmax(-1)
        preds.append(pred.cpu())
        labels.append(targets.cpu())
    y = torch.cat(labels).numpy()
    return classification_metrics(y, torch.cat(preds).numpy(), class_names,
                                  loss=None if tta else total_loss / max(len(y), 1))


def train_seed_reference(
    features_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    num_epochs: int = 2,
    batch_size: int = 48,
    learning_rate: float = 1e-3,
    model_config: dict[str, Any] | None = None,
    feature_file_suffix: str = "_multiscale",
    num_workers: int = 0,
    patience: int = 25,
    seed: int = 42,
    max_train_steps: int | None = None,
    run_test: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train like the seed; returns results with ``history`` holding ``epoch_time`` (train + validation,
    like vidtempo's) and ``train_time`` (the training batches only), plus test metrics plain and TTA.

    ``max_train_steps`` caps batches per epoch (for quick step timings). ``output_dir`` None keeps the best
    weights in memory instead of writing ``best_seed_reference.pt`` (the seed wrote a checkpoint).
    """
    run_start = time.perf_counter()
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    folder = Path(features_dir)
    train_ds = SeedVideoFeatureDataset(folder / f"train_features{feature_file_suffix}.h5", augment=True)
    val_ds = SeedVideoFeatureDataset(folder / f"val_features{feature_file_suffix}.h5")
    test_ds = SeedVideoFeatureDataset(folder / f"test_features{feature_file_suffix}.h5")
    class_names = [k for k, _ in sorted(train_ds.category_mapping.items(), key=lambda kv: kv[1])]
    num_classes = len(class_names)
    cw = seed_class_weights(train_ds.labels, num_classes)
    sampler = WeightedRandomSampler(cw[torch.from_numpy(train_ds.labels)].double(), len(train_ds), replacement=True)
    kw = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=collate_features)
    train_loader = DataLoader(train_ds, sampler=sampler, **kw)
    val_loader = DataLoader(val_ds, shuffle=False, **kw)
    test_loader = DataLoader(test_ds, shuffle=False, **kw)

    cfg = dict(feature_dim=int(train_ds.features.shape[2]), num_classes=num_classes, **(model_config or {}))
    model = SeedTemporalModel(**cfg).to(device)
    criterion = FocalLoss(alpha=cw, gamma=2.0, smoothing=0.1).to(device)
    optimizer = AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), weight_decay=5e-4)
    scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=20, T_mult=2, eta_min=1e-6)

    history: dict[str, list[float]] = {k: [] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_f1",
                                                       "lr", "epoch_time", "train_time", "train_samples")}
    best_val_acc, best_epoch, patience_counter, best_state = 0.0, -1, 0, None
    best_path = Path(output_dir) / "best_seed_reference.pt" if output_dir else None
    if best_path:
        best_path.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(num_epochs):
        epoch_start = time.perf_counter()
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for step, (features, targets, lengths) in enumerate(train_loader):
            if max_train_steps is not None and step >= max_train_steps:
                break
            features, targets = features.to(device), targets.to(device)
            optimizer.zero_grad()
            logits = model(features, lengths)
            loss = criterion(logits, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()  # the seed: one "epoch" of the schedule per batch
            total_loss += loss.item() * targets.shape[0]
            correct += int((logits.argmax(-1) == targets).sum())
            seen += targets.shape[0]
        train_time = time.perf_counter() - epoch_start
        val = evaluate(model, val_loader, criterion, class_names, device)
        epoch_time = time.perf_counter() - epoch_start
        for key, value in (("train_loss", total_loss / max(seen, 1)), ("train_acc", 100.0 * correct / max(seen, 1)),
                           ("val_loss", val["loss"]), ("val_acc", val["accuracy"]), ("val_f1", val["f1_weighted"]),
                           ("lr", optimizer.param_groups[0]["lr"]), ("epoch_time", epoch_time),
                           ("train_time", train_time), ("train_samples", seen)):
            history[key].append(float(value))
        if val["accuracy"] > best_val_acc or best_epoch < 0:
            best_val_acc, best_epoch, patience_counter = val["accuracy"], epoch, 0
            payload = {"epoch": epoch, "model_state_dict": model.state_dict(),
                       "optimizer_state_dict": optimizer.state_dict(), "metrics": val,
                       "best_val_acc": best_val_acc, "best_epoch": best_epoch, "model_config": cfg}
            if best_path:
                torch.save(payload, best_path)
            else:
                best_state = copy.deepcopy(model.state_dict())
        else:
            patience_counter += 1
            if patience_counter >= patience:
                break

    results: dict[str, Any] = {"best_epoch": best_epoch, "best_val_acc": best_val_acc, "history": history,
                               "model_config": cfg}
    if run_test:
        state = torch.load(best_path, map_location=device)["model_state_dict"] if best_path else best_state
        model.load_state_dict(state)
        test_start = time.perf_counter()
        results["test"] = evaluate(model, test_loader, criterion, class_names, device)
        results["test_tta"] = evaluate(model, test_loader, criterion, class_names, device, tta=True)
        results["test_time"] = time.perf_counter() - test_start
    for ds in (train_ds, val_ds, test_ds):
        ds.close()
    results["total_time"] = time.perf_counter() - run_start
    return results


def time_seed_steps(features_dir: str | os.PathLike, steps: int, warmup_steps: int = 1, **kwargs) -> dict[str, float]:
    """Time ``steps`` training batches (after ``warmup_steps``) of the seed loop, no validation or test."""
    warm = train_seed_reference(features_dir, num_epochs=1, max_train_steps=warmup_steps + steps, run_test=False,
                                **kwargs)
    # One epoch holds both, so time a second run of only the warm-up steps and subtract.
    base = train_seed_reference(features_dir, num_epochs=1, max_train_steps=warmup_steps, run_test=False, **kwargs)
    seconds = warm["history"]["train_time"][0] - base["history"]["train_time"][0]
    samples = warm["history"]["train_samples"][0] - base["history"]["train_samples"][0]
    return {"seconds": seconds, "samples": samples, "samples_per_s": samples / seconds if seconds > 0 else float("nan")}


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Run the seed-reference training loop on a feature folder")
    parser.add_argument("features_dir")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--small", action="store_true", help="hidden 128, 2 LSTM layers, 4 heads")
    args = parser.parse_args()
    small = {"hidden_dim": 128, "num_lstm_layers": 2, "num_attention_heads": 4} if args.small else None
    res = train_seed_reference(args.features_dir, num_epochs=args.epochs, batch_size=args.batch_size,
                               model_config=small)
    print(json.dumps({k: v for k, v in res.items() if k not in ("model_config",)}, indent=1, default=str)[:4000])
