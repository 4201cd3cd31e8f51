"""Progress as a person reads it: a live bar on a terminal, a plain line now and then in a log.

A progress bar redraws itself with carriage returns; written to a file or a pipe, that becomes one line of
kilobytes. Off a terminal, bars that stand for a long run (videos of a split, a library) become a line every
``LOG_INTERVAL_S`` seconds and a last one, and short-lived bars (the batches of one epoch, which the epoch's
own line sums up) are not shown.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(iterable: Iterable | None = None, *, quiet: bool = False, in_logs: bool = True,
                 **kwargs: Any) -> tqdm:
    """tqdm on stderr: a bar on a terminal; elsewhere a line every ``LOG_INTERVAL_S`` seconds and one at the
    end (``in_logs``) or nothing; nothing at all when ``quiet``."""
    if quiet or not (in_logs or sys.stderr.isatty()):
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)
    return tqdm(iterable, file=_Lines(), mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ncols=100,
                ascii=True, **kwargs)


class _Lines:
    """A stream for tqdm that writes each redraw as a line of its own on stderr."""

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            sys.stderr.write(text + "\n")

    def flush(self) -> None:
        sys.stderr.flush()
