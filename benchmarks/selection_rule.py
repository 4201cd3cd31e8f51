"""Model selection with a small validation set: the seed's strict accuracy rule vs ties broken by loss.

Trains one small model per seed under each rule on the same generated feature set (a small validation
split, so accuracies tie often) and prints the test accuracy of the selected epoch. Run:

    python benchmarks/selection_rule.py [--seeds 5] [--epochs 25] [--val-videos 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from vidtempo import EnhancedTemporalModelTrainer
from vidtempo.features.synthetic import write_synthetic_features

SMALL_MODEL = {"hidden_dim": 32, "num_lstm_layers": 1, "num_attention_heads": 2, "dropout": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--val-videos", type=int, default=32)
    parser.add_argument("--flip", type=float, default=0.15, help="share of frames showing the other pattern")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        features = Path(tmp) / "features"
        write_synthetic_features(features, {"train": 384, "val": args.val_videos, "test": 1024},
                                 flip_prob=args.flip, min_frames=12, max_frames=40)
        for rule in ("accuracy", "accuracy_then_loss"):
            accuracies, epochs = [], []
            for seed in range(args.seeds):
                trainer = EnhancedTemporalModelTrainer(
                    features, Path(tmp) / rule, device="cpu", model_config=SMALL_MODEL, quiet=True,
                    training_config={"learning_rate": 3e-3, "batch_size": 32, "num_workers": 0, "seed": seed,
                                     "selection": rule, "patience": args.epochs})
                _, results = trainer.train_single_model(num_epochs=args.epochs, model_name=f"s{seed}",
                                                        results_dir=Path(tmp) / "results")
                accuracies.append(results["test"]["accuracy"])
                epochs.append(results["best_epoch"])
            rows[rule] = (accuracies, epochs)
    print(f"{args.seeds} seeds, {args.epochs} epochs, {args.val_videos} validation videos, 1024 test videos")
    print(f"{'selection rule':<22}{'test acc mean':>14}{'std':>8}{'mean best epoch':>17}  per seed")
    for rule, (accuracies, epochs) in rows.items():
        print(f"{rule:<22}{np.mean(accuracies):>13.2f}%{np.std(accuracies):>8.2f}{np.mean(epochs):>17.1f}  "
              + " ".join(f"{a:.1f}" for a in accuracies))


if __name__ == "__main__":
    main()
