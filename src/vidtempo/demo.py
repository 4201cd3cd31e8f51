"""The built-in default run: every training stage offline on a generated feature set, in about a minute.

The generated set (vidtempo.synthetic) hides its class in the order of the frames, so the run shows the
temporal model learning what a mean over frames cannot.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import write_json
from .ensemble import Ensemble
from .store import read_split, split_path
from .synthetic import write_synthetic_features
from .trainer import EnhancedTemporalModelTrainer

# Small enough to train in seconds per member on a laptop CPU; the default model is the seed's full size.
DEMO_MODEL = {"hidden_dim": 48, "num_lstm_layers": 1, "num_attention_heads": 4, "dropout": 0.1}
DEMO_TRAINING = {"learning_rate": 3e-3, "batch_size": 32, "patience": 15, "checkpoint_every": 10,
                 "num_workers": 0}


def run_demo(output_dir: str | os.PathLike, epochs: int = 30, num_models: int = 3, quiet: bool = False) -> dict:
    output_dir = Path(output_dir)
    features_dir = output_dir / "features"
    write_synthetic_features(features_dir)
    trainer = EnhancedTemporalModelTrainer(features_dir, output_dir / "checkpoints", device="auto",
                                           model_config=DEMO_MODEL, training_config=DEMO_TRAINING, quiet=quiet)
    _, results = trainer.train_ensemble(num_models=num_models, num_epochs=epochs,
                                        results_dir=output_dir / "results")
    ensemble = Ensemble.from_checkpoints(output_dir / "checkpoints")
    test = read_split(split_path(features_dir, "test", "_multiscale"))
    report = {"plain": ensemble.evaluate(test), "tta": ensemble.evaluate(test, tta=True)}
    write_json(report, output_dir / "results" / "evaluation_test.json")
    acc, acc_tta = report["plain"]["ensemble"]["accuracy"], report["tta"]["ensemble"]["accuracy"]
    print(f"demo: ensemble of {num_models} on the generated temporal-order task: test accuracy {acc:.1f}% "
          f"(TTA {acc_tta:.1f}%; chance 25%)")
    print(f"demo: features {features_dir}, checkpoints {output_dir / 'checkpoints'}, results {output_dir / 'results'}")
    return results
