"""The exported ensemble graph across model configurations: the shapes it declares and its numbers at video
lengths far from the example it was traced with.

ONNX Runtime plans its buffers from the shapes a graph declares, so a step count frozen into one declared
shape breaks the graph at other lengths (or only warns, depending on how the buffers happen to line up):
parity at one configuration proves little. The members here are untrained (random weights): export and
parity do not depend on what the weights learned, and building them takes no training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from vidtempo.config import ModelConfig  # noqa: E402
from vidtempo.ensemble import Ensemble  # noqa: E402
from vidtempo.ensemble.ensemble import EnsembleSettings  # noqa: E402
from vidtempo.inference.export import ENSEMBLE_ONNX, export_ensemble  # noqa: E402
from vidtempo.model.temporal import TemporalModel  # noqa: E402

pytestmark = pytest.mark.slow  # each configuration is one export (5 to 60 s)

FEATURE_DIM, CLASSES = 8, ("a", "b", "c")
# Lengths far from the export's example (5 steps), a single step, and longer than a default extraction.
LENGTHS = (1, 9, 73, 300)
# (model_config, members): sizes and depths the trainer accepts, each with a small feature dimension.
CONFIGURATIONS = {
    "hidden16-2members": ({"hidden_dim": 16, "num_lstm_layers": 1, "num_attention_heads": 2}, 2),
    "hidden24-3layers-3heads": ({"hidden_dim": 24, "num_lstm_layers": 3, "num_attention_heads": 3}, 1),
    "unidirectional-3members": ({"hidden_dim": 12, "num_lstm_layers": 2, "num_attention_heads": 4,
                                 "bidirectional": False}, 3),
    "seed-default": ({}, 1),  # hidden 768, 4 layers, 12 heads
}
# PyTorch's side of the parity takes the time: 300 steps of the seed's size take it about 10 s on 2 cores.
LONGEST = {"seed-default": 73}


def _ensemble(config: dict, members: int) -> Ensemble:
    torch.manual_seed(members * 1000 + len(config))
    model_config = ModelConfig(feature_dim=FEATURE_DIM, num_classes=len(CLASSES), **config)
    models = [TemporalModel(model_config).eval() for _ in range(members)]
    width = model_config.hidden_dim * (2 if model_config.bidirectional else 1)
    # Centroids for the first member only: the graph holds both kinds of distance ratio.
    stats = [{"centroids": torch.randn(len(CLASSES), width), "distance_q95": torch.rand(len(CLASSES)) + 0.5}]
    settings = EnsembleSettings(member_weights=[float(i + 1) for i in range(members)], temperature=1.3)
    return Ensemble(models, {name: i for i, name in enumerate(CLASSES)},
                    representation_stats=stats + [None] * (members - 1), settings=settings, precision="fp32")


@pytest.fixture(scope="module", params=list(CONFIGURATIONS))
def exported(request, tmp_path_factory):
    config, members = CONFIGURATIONS[request.param]
    ensemble = _ensemble(config, members)
    folder = export_ensemble(ensemble, tmp_path_factory.mktemp("shapes") / request.param)
    return request.param, ensemble, folder / ENSEMBLE_ONNX


def _declared(values) -> dict[str, list]:
    """Each value's dims as the graph declares them: a name where symbolic, else the number."""
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_batch_and_steps_are_symbolic_in_every_declared_input_and_output(exported):
    _, ensemble, path = exported
    graph = onnx.load(str(path)).graph
    members, classes = len(ensemble), ensemble.num_classes
    assert _declared(graph.input) == {"features": ["batch", "steps", FEATURE_DIM], "lengths": ["batch"]}
    assert _declared(graph.output) == {
        "probs": ["batch", classes], "member_probs": [members, "batch", classes], "attention": ["batch", "steps"],
        "trust_score": ["batch"], "confidence": ["batch"], "agreement": ["batch"], "distance_ratio": ["batch"],
    }


def test_the_graph_equals_pytorch_at_lengths_other_than_the_example(exported):
    name, ensemble, path = exported
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    failures = {}
    for steps in [s for s in LENGTHS if s <= LONGEST.get(name, max(LENGTHS))]:
        generator = torch.Generator().manual_seed(steps)
        features = torch.randn(3, steps, FEATURE_DIM, generator=generator)
        lengths = torch.tensor([steps, max(1, steps // 2), 1])
        try:
            # The graph itself, fed as any client would: no padding to a minimum length.
            got = dict(zip(names, session.run(None, {"features": features.numpy(), "lengths": lengths.numpy()})))
            _assert_equal(got, ensemble.analyze(features, lengths), steps)
        except Exception as exc:  # every length is tried: which ones fail tells what was fixed in the graph
            failures[steps] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    assert not failures, "\n".join(f"{steps} steps: {message}" for steps, message in failures.items())


def _assert_equal(got: dict, want: dict, steps: int) -> None:
    assert got["attention"].shape == (3, steps)
    for key in ("probs", "member_probs", "attention"):
        np.testing.assert_allclose(got[key], want[key].numpy(), atol=1e-4, err_msg=key)
    np.testing.assert_array_equal(got["probs"].argmax(-1), want["probs"].argmax(-1).numpy())
    for key, signal in (("trust_score", "score"), ("confidence", "confidence"), ("agreement", "agreement"),
                        ("distance_ratio", "distance_ratio")):
        np.testing.assert_allclose(got[key], want["trust"][signal].numpy(), atol=1e-4, rtol=1e-4, err_msg=key)


def test_a_graph_exported_with_a_fixed_step_count_is_refused(tmp_path, monkeypatch):
    """Without the loop decomposition (a torch that lacks it) this torch freezes the example's steps into the
    graph; the export refuses that graph rather than writing a model that fails on real videos."""
    import contextlib

    from vidtempo.errors import VidtempoError
    from vidtempo.inference import export

    monkeypatch.setattr(export, "_recurrence_as_loop", contextlib.nullcontext)
    ensemble = _ensemble({"hidden_dim": 16, "num_lstm_layers": 1, "num_attention_heads": 2}, 1)
    with pytest.raises(VidtempoError, match="ensemble.onnx: .* exported 'attention' with axis 1 fixed at 5"):
        export_ensemble(ensemble, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []
