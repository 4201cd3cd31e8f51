"""Gaming clips: real gameplay rendered offline by the game engines that ship in PyPI wheels.

* Atari 2600 games from the ROMs bundled with ``ale-py``, run by the Arcade Learning Environment (the Stella
  emulator) at the console's 160 x 210 and scaled to 640 x 480, as an emulator shows them on a 4:3 screen.
* Doom: the scenarios bundled with ``vizdoom`` and the first maps of Freedoom's two games (which it also
  bundles), rendered first-person by the ViZDoom engine at 640 x 480.

A seeded random policy plays: it presses a random button (or button combination) and holds it for a random
number of frames, as a person holding keys would, so the same seed gives the same frames on any machine.
Nothing is recorded from people; the engines render every frame here, well under a second a clip.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._imports import require_extra

GAME_WIDTH, GAME_HEIGHT = 640, 480
ATARI_FPS = 30  # the console runs at 60 Hz; every second frame is kept
ATARI_FRAME_SKIP = 2
ATARI_WARMUP = 150  # frames played before a clip starts: past title screens and the first, idle seconds
DOOM_FPS = 35  # Doom's tic rate: one frame per tic
DOOM_WARMUP = 20  # tics played before a clip starts: a level opens with the player standing still
# A pressed button is held for 4 to 15 engine frames (70 to 400 ms), like a player holding a key.
HOLD_FRAMES = (4, 16)

PURPOSE = "vidtempo demo's Gaming clips"
FREEDOOM = {"freedoom1": "Freedoom Phase 1", "freedoom2": "Freedoom Phase 2"}  # the games vizdoom ships


@dataclass(frozen=True)
class GameSource:
    """One game (Atari) or one Doom scenario or game; a split's sources are never another split's."""

    engine: str  # "atari" or "doom"
    name: str  # the ROM id, or the scenario's .cfg name without .cfg
    doom_map: str | None = None

    @property
    def label(self) -> str:
        if self.engine == "atari":
            return f"Atari {self.name}"
        if self.doom_map:
            return f"{FREEDOOM.get(self.name, self.name)} map {self.doom_map}"
        return f"Doom scenario {self.name}"

    @property
    def stem(self) -> str:
        return f"{self.engine}_{self.name}"


@dataclass
class Gameplay:
    """What a render produced: the frames (RGB uint8 at the engine's own size) and what the policy pressed,
    so the same actions can be replayed on a fresh engine."""

    frames: list[np.ndarray]
    actions: list[Any]
    fps: int


def ale():
    return require_extra("ale_py", "demo", PURPOSE)


def vizdoom():
    return require_extra("vizdoom", "demo", PURPOSE)


def held_actions(rng: np.random.Generator, choices: int, steps: int) -> list[int]:
    """``steps`` action indices in ``range(choices)``, each held for a random number of steps."""
    actions: list[int] = []
    while len(actions) < steps:
        actions += [int(rng.integers(choices))] * int(rng.integers(*HOLD_FRAMES))
    return actions[:steps]


def atari_emulator(game: str, seed: int):
    """A fresh ALE with ``game`` loaded; sticky actions off, so the policy alone decides what is pressed."""
    ale_py = ale()
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr
    emulator = ale_py.ALEInterface()
    emulator.setInt("random_seed", int(seed))
    emulator.setFloat("repeat_action_probability", 0.0)
    emulator.loadROM(ale_py.roms.get_rom_path(game))
    return emulator


def render_atari(game: str, seed: int, frames: int) -> Gameplay:
    """``frames`` screens (210 x 160 RGB) of ``game`` played by the seeded policy after ATARI_WARMUP frames."""
    emulator = atari_emulator(game, seed)
    buttons = emulator.getMinimalActionSet()
    steps = ATARI_WARMUP + frames * ATARI_FRAME_SKIP
    actions = [buttons[i] for i in held_actions(np.random.default_rng(seed), len(buttons), steps)]
    screens = []
    for step, action in enumerate(actions):
        emulator.act(action)
        if emulator.game_over():
            emulator.reset_game()
        if step >= ATARI_WARMUP and (step - ATARI_WARMUP) % ATARI_FRAME_SKIP == ATARI_FRAME_SKIP - 1:
            screens.append(emulator.getScreenRGB())
    return Gameplay(screens, actions, ATARI_FPS)


# A subset of Doom's buttons that every scenario and game config accepts once set: walking, turning, firing.
DOOM_BUTTONS = ("MOVE_FORWARD", "MOVE_BACKWARD", "TURN_LEFT", "TURN_RIGHT", "MOVE_LEFT", "MOVE_RIGHT", "ATTACK")
# Combinations a player presses: mostly forward and turning, sometimes strafing or firing.
DOOM_CHORDS = (
    ("MOVE_FORWARD",), ("MOVE_FORWARD",), ("MOVE_FORWARD", "TURN_LEFT"), ("MOVE_FORWARD", "TURN_RIGHT"),
    ("TURN_LEFT",), ("TURN_RIGHT",), ("MOVE_LEFT",), ("MOVE_RIGHT",), ("ATTACK",), ("MOVE_FORWARD", "ATTACK"),
    ("MOVE_BACKWARD",),
)


def doom_engine(name: str, seed: int, doom_map: str | None = None, ini: str | os.PathLike | None = None):
    """A ViZDoom game for ``name``.cfg (one of its scenarios, or freedoom1/freedoom2), off screen, 640 x 480;
    the engine keeps its settings in ``ini`` (by default ./_vizdoom.ini)."""
    vzd = vizdoom()
    game = vzd.DoomGame()
    game.load_config(os.path.join(vzd.scenarios_path, f"{name}.cfg"))
    if ini is not None:
        game.set_doom_config_path(str(ini))
    game.set_window_visible(False)
    game.set_mode(vzd.Mode.PLAYER)
    game.set_screen_format(vzd.ScreenFormat.RGB24)
    game.set_screen_resolution(vzd.ScreenResolution.RES_640X480)
    game.set_audio_buffer_enabled(False)
    game.set_automap_buffer_enabled(False)
    game.set_available_buttons([getattr(vzd.Button, b) for b in DOOM_BUTTONS])
    game.set_episode_timeout(0)  # a clip never runs into a scenario's time limit
    if doom_map:
        game.set_doom_map(doom_map)
    game.set_seed(int(seed))
    game.init()
    return game


def doom_action(chord: int) -> list[int]:
    pressed = DOOM_CHORDS[chord]
    return [int(button in pressed) for button in DOOM_BUTTONS]


# The engine makes ./_vizdoom (a folder it names itself, in the working directory) when it starts: one game
# at a time, so that the folder it made can be removed once it has closed.
_DOOM_LOCK = threading.Lock()
_DOOM_FOLDER = "_vizdoom"


def render_doom(name: str, seed: int, frames: int, doom_map: str | None = None) -> Gameplay:
    """``frames`` first-person screens (480 x 640 RGB) of ``name`` played by the seeded policy, one per tic."""
    steps = DOOM_WARMUP + frames
    actions = [doom_action(c) for c in held_actions(np.random.default_rng(seed), len(DOOM_CHORDS), steps)]
    screens = []
    with _DOOM_LOCK, tempfile.TemporaryDirectory(prefix="vidtempo-doom-") as scratch:
        made_folder = not os.path.exists(_DOOM_FOLDER)
        try:
            game = doom_engine(name, seed, doom_map, ini=Path(scratch) / "vizdoom.ini")  # not ./_vizdoom.ini
            try:
                for step, action in enumerate(actions):
                    if game.is_episode_finished():  # died (a scenario's hazards): a new life, as a player would
                        game.new_episode()
                    if step >= DOOM_WARMUP:
                        screens.append(game.get_state().screen_buffer.copy())
                    game.make_action(action, 1)
            finally:
                game.close()
        finally:
            if made_folder:
                _remove_empty_tree(Path(_DOOM_FOLDER))
    return Gameplay(screens, actions, DOOM_FPS)


def _remove_empty_tree(folder: Path) -> None:
    """Remove ``folder`` and the empty folders in it; anything holding a file stays."""
    for inner in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if inner.is_dir():
            _try_rmdir(inner)
    _try_rmdir(folder)


def _try_rmdir(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty, or gone already


def render_gameplay(source: GameSource, seed: int, frames: int) -> Gameplay:
    if source.engine == "atari":
        return render_atari(source.name, seed, frames)
    return render_doom(source.name, seed, frames, source.doom_map)


def to_screen(frame: np.ndarray) -> np.ndarray:
    """A frame at GAME_WIDTH x GAME_HEIGHT. Atari's 160 x 210 pixels are not square: a 4:3 screen shows them
    wide, and emulators scale them as here, without smoothing (nearest neighbour)."""
    if frame.shape[:2] == (GAME_HEIGHT, GAME_WIDTH):
        return frame
    rows = np.arange(GAME_HEIGHT) * frame.shape[0] // GAME_HEIGHT
    cols = np.arange(GAME_WIDTH) * frame.shape[1] // GAME_WIDTH
    return frame[rows][:, cols]


def gameplay_clip(source: GameSource, seed: int, frames: int) -> tuple[list[np.ndarray], int]:
    """A clip of ``source``: ``frames`` RGB frames at GAME_WIDTH x GAME_HEIGHT and its frame rate."""
    play = render_gameplay(source, seed, frames)
    return [to_screen(f) for f in play.frames], play.fps
