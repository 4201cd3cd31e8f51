"""Does the trust score separate correct from wrong predictions? Prints AUROC per signal on held-out data.

A small ensemble is trained on a generated temporal-order task made hard enough (noise, short training)
that it makes mistakes; the test split is then scored. Run:

    python benchmarks/trust_auroc.py [--noise 2.2] [--epochs 6] [--members 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from vidtempo import Ensemble, EnhancedTemporalModelTrainer
from vidtempo.features.store import MULTISCALE_SUFFIX, read_split, split_path
from vidtempo.features.synthetic import write_synthetic_features
from vidtempo.ensemble.trust import OOD_DISTANCE_RATIO, auroc_correct_vs_wrong, flag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--flip", type=float, default=0.3, help="share of frames showing the other pattern")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--test-videos", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    with tempfile.TemporaryDirectory() as tmp:
        features = Path(tmp) / "features"
        write_synthetic_features(features, {"train": 512, "val": 128, "test": args.test_videos}, noise=args.noise,
                                 flip_prob=args.flip, min_frames=12, max_frames=40)
        trainer = EnhancedTemporalModelTrainer(
            features, Path(tmp) / "ckpt", device="cpu", quiet=True,
            model_config={"hidden_dim": 32, "num_lstm_layers": 1, "num_attention_heads": 2, "dropout": 0.1},
            training_config={"learning_rate": 3e-3, "batch_size": 32, "num_workers": 0},
        )
        trainer.train_ensemble(num_models=args.members, num_epochs=args.epochs, results_dir=Path(tmp) / "results")
        ensemble = Ensemble.from_checkpoints(Path(tmp) / "ckpt")
        test = read_split(split_path(features, "test", MULTISCALE_SUFFIX))
        analysis = ensemble.analyze(test.features, test.num_frames)
    signals = analysis["trust"]
    correct = (analysis["probs"].argmax(-1).numpy() == test.labels)
    rows = [
        ("trust score", signals["score"].numpy()),
        ("confidence (top probability)", signals["confidence"].numpy()),
        ("member agreement", signals["agreement"].numpy()),
        ("1 / distance ratio", 1.0 / signals["distance_ratio"].numpy()),
    ]
    print(f"held-out videos: {len(correct)}, ensemble accuracy {100 * correct.mean():.1f}%, "
          f"{args.members} members, noise {args.noise}, flipped frames {args.flip}")
    print(f"{'signal':<32}{'AUROC (correct vs wrong)':>26}")
    for name, values in rows:
        auroc = auroc_correct_vs_wrong(values, correct)
        print(f"{name:<32}{'n/a' if auroc is None else f'{auroc:.3f}':>26}")
    threshold = ensemble.settings.uncertain_below
    flags = np.array([flag(float(s), float(r), threshold) for s, r in zip(signals["score"], signals["distance_ratio"])])
    print(f"\nflag (uncertain below {threshold:.3f}, fitted on validation; out_of_distribution above distance "
          f"ratio {OOD_DISTANCE_RATIO})")
    print(f"{'flag':<24}{'videos':>8}{'accuracy':>10}")
    for name in ("ok", "uncertain", "out_of_distribution"):
        chosen = flags == name
        accuracy = f"{100 * correct[chosen].mean():.1f}%" if chosen.any() else "-"
        print(f"{name:<24}{int(chosen.sum()):>8}{accuracy:>10}")


if __name__ == "__main__":
    main()
