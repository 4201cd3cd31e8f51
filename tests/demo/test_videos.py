"""The demo's clips: four classes, sources that never cross splits, gameplay from the real engines."""

from __future__ import annotations

import os
import sys
from itertools import combinations
from pathlib import Path

import av
import numpy as np
import pytest

from vidtempo.demo import gameplay, screens, videos
from vidtempo.demo.gameplay import GameSource, render_atari, render_doom
from vidtempo.demo.screens import ScreenSource, screen_clip

CLASSES = ["Animation", "Flat_Content", "Gaming", "Natural_Content"]


def test_each_game_scenario_and_text_source_belongs_to_one_split():
    for table in (videos.GAME_SOURCES, videos.SCREEN_SOURCES):
        names = {split: {source for source, _ in items} for split, items in table.items()}
        assert set(names) == set(videos.SPLITS) and all(names.values())
        for a, b in combinations(videos.SPLITS, 2):
            assert not names[a] & names[b], (a, b)
    # A folder of vidtempo's source (shown as code or as slides of its docstrings) is one split's.
    folders = {split: {s.name for s, _ in items if s.kind in ("code", "slides")}
               for split, items in videos.SCREEN_SOURCES.items()}
    for a, b in combinations(videos.SPLITS, 2):
        assert not folders[a] & folders[b], (a, b)
    # The split stretches of a real video hold their clips whole, and share no frame.
    for total in (120, 132, 250):
        frames = {split: {f for s in videos.clip_starts(total, split, 4) for f in range(s, s + videos.CLIP_FRAMES)}
                  for split in videos.SPLITS}
        for split, used in frames.items():
            lo, hi = videos.split_range(total, split)
            assert used and min(used) >= lo and max(used) < hi
        for a, b in combinations(videos.SPLITS, 2):
            assert not frames[a] & frames[b]


def test_atari_frames_are_the_emulators_and_replay_exactly():
    """The clip's screens are what a fresh Arcade Learning Environment shows for the same seed and buttons."""
    import ale_py

    play = render_atari("breakout", seed=11, frames=6)
    assert len(play.frames) == 6 and play.frames[0].shape == (210, 160, 3)
    assert any(not np.array_equal(play.frames[0], f) for f in play.frames[1:])  # the game moves

    emulator = ale_py.ALEInterface()
    emulator.setInt("random_seed", 11)
    emulator.setFloat("repeat_action_probability", 0.0)
    emulator.loadROM(ale_py.roms.get_rom_path("breakout"))
    screens_seen = []
    for step, action in enumerate(play.actions):
        emulator.act(action)
        if emulator.game_over():
            emulator.reset_game()
        screens_seen.append(emulator.getScreenRGB())
    kept = screens_seen[gameplay.ATARI_WARMUP + gameplay.ATARI_FRAME_SKIP - 1 :: gameplay.ATARI_FRAME_SKIP]
    assert all(np.array_equal(a, b) for a, b in zip(play.frames, kept, strict=True))
    # The seed decides the policy: another seed presses other buttons.
    assert render_atari("breakout", seed=12, frames=6).actions != play.actions


def test_doom_frames_are_the_engines_and_replay_exactly(tmp_path, monkeypatch):
    """The clip's screens are what a fresh ViZDoom game renders for the same seed and buttons."""
    import vizdoom as vzd

    monkeypatch.chdir(tmp_path)  # the engine makes ./_vizdoom
    play = render_doom("deadly_corridor", seed=5, frames=4)
    assert len(play.frames) == 4 and play.frames[0].shape == (480, 640, 3)
    assert any(not np.array_equal(play.frames[0], f) for f in play.frames[1:])
    assert list(tmp_path.iterdir()) == []  # the render leaves nothing in the working directory

    game = vzd.DoomGame()
    game.load_config(os.path.join(vzd.scenarios_path, "deadly_corridor.cfg"))
    game.set_doom_config_path(str(tmp_path / "vizdoom.ini"))
    game.set_window_visible(False)
    game.set_screen_format(vzd.ScreenFormat.RGB24)
    game.set_screen_resolution(vzd.ScreenResolution.RES_640X480)
    game.set_audio_buffer_enabled(False)
    game.set_available_buttons([getattr(vzd.Button, b) for b in gameplay.DOOM_BUTTONS])
    game.set_episode_timeout(0)
    game.set_seed(5)
    game.init()
    try:
        seen = []
        for action in play.actions:
            seen.append(game.get_state().screen_buffer.copy())
            game.make_action(action, 1)
    finally:
        game.close()
    assert all(np.array_equal(a, b) for a, b in zip(play.frames, seen[gameplay.DOOM_WARMUP :], strict=True))


def test_atari_screens_are_scaled_to_480p_without_smoothing():
    frame = np.random.default_rng(0).integers(0, 255, (210, 160, 3), dtype=np.uint8)
    screen = gameplay.to_screen(frame)
    assert screen.shape == (480, 640, 3)
    assert {tuple(p) for p in screen.reshape(-1, 3)} <= {tuple(p) for p in frame.reshape(-1, 3)}


@pytest.mark.parametrize("source", [ScreenSource("code", "features"), ScreenSource("docs", "json"),
                                    ScreenSource("data", "wine"), ScreenSource("slides", "cli")],
                         ids=lambda s: s.kind)
def test_screen_clips_show_real_text_and_move_like_a_screen_recording(source):
    frames, shows = screen_clip(source, np.random.default_rng(3), 8)
    again, _ = screen_clip(source, np.random.default_rng(3), 8)
    assert len(frames) == 8 and frames[0].shape == (screens.SCREEN_HEIGHT, screens.SCREEN_WIDTH, 3)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))  # seeded: the same clip every time
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])  # scrolling, typing, a moving pointer
    if source.kind == "code":  # a real file of the folder
        assert (screens.PACKAGE_DIR.parent / shows).is_file() and shows.startswith("vidtempo/features/")


def test_the_demo_without_the_demo_extra_names_it_in_one_line(capsys, monkeypatch, tmp_path):
    from vidtempo.cli import main

    monkeypatch.setitem(sys.modules, "vizdoom", None)  # as if it were not installed
    status = main(["demo", "--output-dir", str(tmp_path / "demo"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert "pip install 'vidtempo[demo]'" in err[0]
    assert not (tmp_path / "demo").exists()


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory) -> videos.DemoVideoSet:
    return videos.build_demo_videos(tmp_path_factory.mktemp("demo_set") / "videos")


def decode(path: Path) -> tuple[str, list[np.ndarray]]:
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
        return codec, [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.slow  # renders and encodes the whole set (20 to 40 s on 2 cores)
def test_the_demo_set_has_four_classes_and_no_source_in_two_splits(demo_set):
    assert demo_set.classes == CLASSES
    for split in videos.SPLITS:
        assert sorted(demo_set.clips[split]) == CLASSES and min(demo_set.clips[split].values()) >= 3
        on_disk = {c: len(list((demo_set.root / split / c).glob("*.mp4"))) for c in CLASSES}
        assert on_disk == demo_set.clips[split]
    for category in CLASSES:
        for a, b in combinations(videos.SPLITS, 2):
            assert not set(demo_set.split_sources[a][category]) & set(demo_set.split_sources[b][category]), category
    # The real videos' clips: no frame of a source video in two splits.
    used: dict[tuple[str, str], set[int]] = {}
    for entry in demo_set.manifest:
        if entry["kind"] == videos.KIND_REAL:
            used.setdefault((entry["source"], entry["split"]), set()).update(range(*entry["frames"]))
    for (source, a), (other, b) in combinations(used, 2):
        if source == other:
            assert not used[source, a] & used[other, b], (source, a, b)
    assert {e["kind"] for e in demo_set.manifest if e["category"] == "Gaming"} == {videos.KIND_GAMEPLAY}
    assert {e["kind"] for e in demo_set.manifest if e["category"] == "Flat_Content"} == {videos.KIND_RENDERED}


@pytest.mark.slow  # shares the set built above
def test_a_gaming_clip_is_the_engines_render_encoded_in_h264(demo_set):
    codec, frames = decode(demo_set.root / "test" / "Gaming" / "doom_deathmatch_000.mp4")
    assert codec == "h264" and len(frames) == videos.CLIP_FRAMES and frames[0].shape == (480, 640, 3)
    seed = videos.clip_seed(0, "test", "doom_deathmatch", 0)
    rendered, _ = gameplay.gameplay_clip(GameSource("doom", "deathmatch"), seed, videos.CLIP_FRAMES)
    errors = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, rendered)]
    shifted = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames[1:], rendered[:-1])]
    assert max(errors) < 6  # the engine's render, up to H.264's loss (about 3.5 of 255)
    assert np.mean(shifted) > 1.5 * np.mean(errors)  # frame for frame: the view moves between frames
    for category in CLASSES:
        assert decode(next((demo_set.root / "val" / category).glob("*.mp4")))[0] == "h264"


def test_the_same_seed_builds_the_same_clip_bytes(tmp_path):
    """Rendering and encoding are deterministic: a clip is the same file on every run."""
    def first(jobs, stem):  # a job is partial(_write, path, render, entry)
        return next(job for job in jobs if Path(job.args[0]).name.startswith(stem))

    for stem in ("atari_breakout", "doom_freedoom1", "code_", "docs_"):
        builder = videos._game_clips if stem.startswith(("atari", "doom")) else videos._screen_clips
        a, b = (tmp_path / run / first(builder(tmp_path / run, 0), stem)()["file"] for run in "ab")
        assert a.read_bytes() == b.read_bytes(), stem
