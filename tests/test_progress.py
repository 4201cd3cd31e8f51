"""Progress off a terminal: plain lines now and then, never carriage returns."""

from __future__ import annotations

import subprocess
import sys

CODE = """
from vidtempo.progress import progress_bar
with progress_bar(total=2000, desc="videos", unit="video", in_logs={in_logs}) as bar:
    for _ in range(2000):
        bar.update(1)
        bar.set_postfix_str("fast", refresh=False)
"""


def run(in_logs: bool) -> str:
    result = subprocess.run([sys.executable, "-c", CODE.format(in_logs=in_logs)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_a_long_bar_in_a_log_is_a_few_plain_lines():
    err = run(in_logs=True)
    assert "\r" not in err
    lines = err.splitlines()
    assert 1 <= len(lines) <= 3 and "2000/2000" in lines[-1], err


def test_a_short_lived_bar_is_not_written_to_a_log():
    assert run(in_logs=False) == ""
