"""The service's bounded state on its own: the job table and the disk budget of held videos."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from vidtempo.serve import jobs  # noqa: E402
from vidtempo.serve.jobs import DiskBudget, Full, HeldVideo, JobTable  # noqa: E402


def test_the_job_table_refuses_past_its_active_limit_and_makes_room_as_jobs_finish():
    table = JobTable(max_active=2)
    first, second = table.add("a.mp4"), table.add("b.mp4")
    with pytest.raises(Full) as caught:
        table.add("c.mp4")
    assert caught.value.retry_after_s >= 1
    table.finish(first)
    third = table.add("c.mp4")
    assert table.get(first.id) is first, "a finished job stays for its client to poll"
    assert [table.get(second.id), table.get(third.id)] == [second, third]


def test_finished_jobs_are_forgotten_oldest_first_past_the_keep_limit():
    table = JobTable(max_active=1, keep_finished=3)
    finished = []
    for i in range(10):
        job = table.add(f"{i}.mp4")
        table.finish(job)
        finished.append(job)
    assert len(table) == 3
    assert [table.get(job.id) for job in finished[-3:]] == finished[-3:]


def test_finished_jobs_are_forgotten_after_the_retention_time():
    table = JobTable(max_active=4)
    job = table.add("old.mp4")
    table.finish(job)
    job.finished_at -= jobs.JOB_RETENTION_S + 1
    table.add("new.mp4")
    assert table.get(job.id) is None and len(table) == 1


def test_the_disk_budget_counts_reservations_until_the_files_are_discarded(tmp_path):
    budget = DiskBudget(max_bytes=1000)
    path = tmp_path / "video"
    path.write_bytes(b"x" * 300)
    budget.reserve(800)
    video = HeldVideo(path, "clip.mp4", budget, 800)
    with pytest.raises(Full):
        budget.reserve(300)
    video.settle(300)
    budget.reserve(300)
    assert budget.held == 600
    video.discard()
    video.discard()
    assert budget.held == 300 and not path.exists()


def test_a_held_video_names_itself_as_the_client_did(tmp_path):
    video = HeldVideo(tmp_path / "0af3c9", "holiday.mp4", DiskBudget(10), 0)
    assert video.redact(f"cannot decode {tmp_path / '0af3c9'}: bad header") == "cannot decode holiday.mp4: bad header"
