"""``--shard I/N`` and ``--shard auto``: which shard a process is, from its argument or its launcher."""

from __future__ import annotations

import pytest

from extract_fixtures import LAUNCHER_VARIABLES
from vidtempo.cli.commands import main as vidtempo_main
from vidtempo.errors import VidtempoError
from vidtempo.features.sharding import resolve_shard


@pytest.mark.parametrize("environ, shard", [
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, (1, 4)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, (4, 4)),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (4, 4)),  # no minimum given: from 0
    ({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2",
      "SLURM_ARRAY_TASK_COUNT": "4"}, (4, 4)),  # --array=0-6:2
    ({"JOB_COMPLETION_INDEX": "2", "VIDTEMPO_NUM_SHARDS": "3"}, (3, 3)),
    ({"RANK": "1", "WORLD_SIZE": "2"}, (2, 2)),
    # A Slurm array task that also runs under torchrun: the array decides the shard.
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "RANK": "0", "WORLD_SIZE": "1"}, (2, 2)),
])
def test_auto_reads_the_launchers_variables(environ, shard):
    assert resolve_shard("auto", environ) == shard
    assert resolve_shard(" AUTO ", environ) == shard


def test_explicit_shard_ignores_the_environment():
    assert resolve_shard("2/4", {"RANK": "0", "WORLD_SIZE": "8"}) == (2, 4)


@pytest.mark.parametrize("environ, message", [
    ({}, "no shard in the environment"),
    ({"JOB_COMPLETION_INDEX": "1"}, "VIDTEMPO_NUM_SHARDS"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "2"}, "SLURM_ARRAY_TASK_ID=5"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, "step 2"),
    ({"RANK": "two", "WORLD_SIZE": "4"}, "RANK='two' is not an integer"),
    ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK=4 with WORLD_SIZE=4"),
])
def test_auto_without_a_usable_shard_is_refused_in_one_line(environ, message):
    with pytest.raises(VidtempoError, match=message) as info:
        resolve_shard("auto", environ)
    assert str(info.value).startswith("--shard auto:") and "\n" not in str(info.value)


def test_extract_with_shard_auto_and_no_launcher_exits_2(tmp_path, capsys, monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "videos").mkdir()
    code = vidtempo_main(["extract", "--videos-dir", str(tmp_path / "videos"), "--output-dir", str(tmp_path / "out"),
                          "--shard", "auto"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vidtempo: error: --shard auto: no shard in the environment") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
