"""Decoder processes that start clean, with a watchdog outside them.

Every video is decoded in a worker process, never in the caller's:

- **No FFmpeg state crosses a fork.** Workers come from a ``forkserver`` (a process that imported this module
  and never decoded a frame), not from forking the caller. PyAV 17 and later resize with a pool of slice
  threads, and PyAV 18.1.1 keeps one scaling context per thread: a child forked after its parent resized a
  frame inherits the context without the pool's threads, and its next resize waits for ever.
- **A stuck decoder is ended from outside.** A decode runs within ``max_seconds`` (the worker stops itself
  when it can); one still running ``WATCHDOG_GRACE_SECONDS`` later, blocked in FFmpeg or the file system, is
  killed by the parent's watchdog thread, its video fails with "decoder stopped responding after N s", and a
  fresh worker takes its place. A worker that dies (a crash, a signal, the out-of-memory killer) fails its
  video the same way. The run goes on either way.

``DecoderPool.submit`` takes one decode (a picklable function of the path and plain values) and returns a
``concurrent.futures.Future``; ``imap`` runs many in order with a bounded number ahead. The pool is
thread-safe: the service's requests share one.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator

from .video import VideoDecodeError

# A worker past its decode limit is given this much longer to stop itself before it is killed.
WATCHDOG_GRACE_SECONDS = 2.0
# Fault injection for tests: a decode whose path contains this variable's value blocks for ever, ignoring
# SIGTERM, as a decoder stuck inside a C call does.
STALL_ENV = "VIDTEMPO_TEST_STALL_DECODE"


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where the platform has it (Linux, macOS), preloading this module so that a fresh
    worker starts in milliseconds; else ``spawn``. Both start from a process that never touched FFmpeg."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _worker_main(conn: Connection, niceness: int) -> None:
    """A decoder process: receive ``(function, args)``, send back ``("ok", value)`` or ``("error", line)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends the workers
    if niceness:
        try:
            os.nice(niceness)
        except OSError:
            pass
    import torch

    torch.set_num_threads(1)  # a worker only decodes; the caller's CNN has the cores
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        function, args = message
        label = str(args[0]) if args else "video"
        try:
            _stall_if_asked(label)
            reply = ("ok", function(*args))
        except VideoDecodeError as exc:
            reply = ("error", str(exc))
        except Exception as exc:  # a decoder crash on one file must not end the run
            reply = ("error", f"{label}: unexpected decoding error ({type(exc).__name__}: {exc})")
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            return


def _stall_if_asked(label: str) -> None:
    marker = os.environ.get(STALL_ENV)
    if marker and marker in label:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        threading.Event().wait()


@dataclass
class _Task:
    future: Future
    function: Callable[..., Any]
    args: tuple

    @property
    def label(self) -> str:
        return str(self.args[0]) if self.args else "video"


class _Worker:
    """One decoder process, its end of the pipe, and the task it is running."""

    def __init__(self, context: multiprocessing.context.BaseContext, niceness: int) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child, niceness), daemon=True,
                                       name="vidtempo-decoder")
        self.process.start()
        child.close()
        self.task: _Task | None = None
        self.started = 0.0

    def give(self, task: _Task) -> None:
        self.conn.send((task.function, task.args))
        self.task, self.started = task, time.monotonic()

    def stop(self, gently: bool) -> None:
        if gently and self.process.is_alive():
            try:
                self.conn.send(None)
                self.process.join(1.0)
            except (BrokenPipeError, OSError):
                pass
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)
        self.conn.close()


class _PoolState:
    """The workers and the queue, run by the watchdog thread; kept apart from DecoderPool so that dropping
    the pool (without close) still lets it be collected and its processes stopped."""

    def __init__(self, workers: int, max_seconds: float | None, niceness: int) -> None:
        self.context = _context()
        self.max_seconds = max_seconds
        self.niceness = niceness
        self.lock = threading.Lock()
        self.pending: deque[_Task] = deque()
        self.closed = False
        self.wake_read, self.wake_write = socket.socketpair()
        self.wake_read.setblocking(False)
        self.workers = [_Worker(self.context, niceness) for _ in range(workers)]
        self.thread = threading.Thread(target=self.run, name="vidtempo-decoder-watchdog", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        try:
            self.wake_write.send(b"x")
        except OSError:
            pass

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:  # a bug here must fail the waiting decodes, not leave them waiting for ever
            with self.lock:
                tasks = [*self.pending, *(w.task for w in self.workers if w.task is not None)]
                self.pending.clear()
            for task in tasks:
                _fail(task.future, f"{task.label}: the decoder pool failed ({type(exc).__name__}: {exc})")
            raise

    def _watch(self) -> None:
        while True:
            finished: list[tuple[Future, str, Any]] = []
            with self.lock:
                if self.closed:
                    return
                finished.extend(self._dispatch())
                waiting = {w.conn: w for w in self.workers if w.task is not None}
                sentinels = {w.process.sentinel: w for w in self.workers}
                timeout = self._seconds_to_next_deadline()
            self._resolve(finished)
            ready = wait([*waiting, *sentinels, self.wake_read], timeout)
            finished = []
            with self.lock:
                self._drain_wake()
                for conn in ready:
                    worker = waiting.get(conn)
                    if worker is not None and worker in self.workers:
                        finished.append(self._receive(worker))
                for sentinel in ready:
                    worker = sentinels.get(sentinel)
                    if worker is not None and worker in self.workers and not worker.process.is_alive():
                        finished.extend(self._replace(worker, self._death_reason(worker)))
                finished.extend(self._stop_overdue())
            self._resolve(finished)

    @staticmethod
    def _resolve(finished: list[tuple[Future, str, Any]]) -> None:
        for future, kind, value in finished:
            if kind == "ok":
                future.set_result(value)
            else:
                future.set_exception(VideoDecodeError(value))

    def _dispatch(self) -> list[tuple[Future, str, Any]]:
        finished = []
        for worker in list(self.workers):
            while worker.task is None and self.pending:
                task = self.pending.popleft()
                if not task.future.set_running_or_notify_cancel():
                    continue  # cancelled while it waited
                try:
                    worker.give(task)
                except (BrokenPipeError, OSError):  # the worker died while idle
                    worker.task = task
                    finished.extend(self._replace(worker, self._death_reason(worker)))
                    break
        return finished

    def _seconds_to_next_deadline(self) -> float | None:
        if self.max_seconds is None:
            return None
        limit = self.max_seconds + WATCHDOG_GRACE_SECONDS
        starts = [w.started for w in self.workers if w.task is not None]
        return None if not starts else max(0.0, min(starts) + limit - time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while self.wake_read.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _receive(self, worker: _Worker) -> tuple[Future, str, Any]:
        task = worker.task
        assert task is not None
        try:
            kind, value = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError, pickle.UnpicklingError):
            worker.process.join(1.0)
            (finished,) = self._replace(worker, self._death_reason(worker))
            return finished
        worker.task = None
        return task.future, kind, value

    def _death_reason(self, worker: _Worker) -> str:
        code = worker.process.exitcode
        if code is not None and code < 0:
            try:
                return f"decoder process ended by {signal.Signals(-code).name}"
            except ValueError:
                return f"decoder process ended by signal {-code}"
        return f"decoder process ended (exit status {code})"

    def _replace(self, worker: _Worker, reason: str) -> list[tuple[Future, str, Any]]:
        """Stop ``worker``, fail its task with ``reason``, and start a fresh process in its place."""
        task = worker.task
        worker.task = None
        worker.stop(gently=False)
        self.workers[self.workers.index(worker)] = _Worker(self.context, self.niceness)
        return [] if task is None else [(task.future, "error", f"{task.label}: {reason}")]

    def _stop_overdue(self) -> list[tuple[Future, str, Any]]:
        if self.max_seconds is None:
            return []
        finished = []
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.task is not None and now - worker.started > self.max_seconds + WATCHDOG_GRACE_SECONDS:
                seconds = now - worker.started
                finished.extend(self._replace(
                    worker, f"decoder stopped responding after {seconds:.0f} s (--max-decode-seconds "
                            f"{self.max_seconds:g}); its process was stopped"))
        return finished

    def shutdown(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            pending, self.pending = list(self.pending), deque()
        self.wake()
        if self.thread is not threading.current_thread():
            self.thread.join(10.0)
        for worker in self.workers:
            if worker.task is not None:
                worker.task.future.cancel() or _fail(worker.task.future, "the decoder pool was closed")
            worker.stop(gently=worker.task is None)
        for task in pending:
            task.future.cancel()
        self.wake_read.close()
        self.wake_write.close()


def _fail(future: Future, reason: str) -> None:
    if not future.done():
        try:
            future.set_exception(VideoDecodeError(reason))
        except Exception:  # already resolved by a racing result
            pass


class DecoderPool:
    """``workers`` decoder processes with a watchdog (see the module docstring); ``max_seconds=None``
    leaves decodes unbounded in time (a dead worker still fails only its video). Use as a context manager or
    call ``close``; a pool dropped without either stops its processes when collected."""

    def __init__(self, workers: int = 1, max_seconds: float | None = None, niceness: int = 0) -> None:
        if workers < 1:
            raise ValueError(f"a decoder pool needs at least one worker, got {workers}")
        self._state = _PoolState(workers, max_seconds, niceness)
        self._finalizer = weakref.finalize(self, self._state.shutdown)

    @property
    def workers(self) -> int:
        return len(self._state.workers)

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        """Run ``function(*args)`` in a decoder process (``args[0]`` names the video in error messages).
        The future's exception is a VideoDecodeError for a file that cannot be decoded, a decode over its
        limit, or a worker that died."""
        state = self._state
        future: Future = Future()
        with state.lock:
            if state.closed or not state.thread.is_alive():
                raise RuntimeError("the decoder pool is closed")
            state.pending.append(_Task(future, function, args))
        state.wake()
        return future

    def imap(self, function: Callable[..., Any], arguments: Iterable[tuple], ahead: int
             ) -> Iterator[tuple[Any, str | None]]:
        """``(value, None)`` or ``(None, error line)`` for each ``function(*args)``, in order, with at most
        ``ahead`` decodes submitted beyond the one the caller waits for."""
        source = iter(arguments)
        queued: deque[Future] = deque()

        def top_up() -> None:
            while len(queued) <= ahead:
                args = next(source, None)
                if args is None:
                    return
                queued.append(self.submit(function, *args))

        try:
            top_up()
            while queued:
                future = queued.popleft()
                try:
                    value, error = future.result(), None
                except VideoDecodeError as exc:
                    value, error = None, str(exc)
                top_up()
                yield value, error
        finally:
            for future in queued:
                future.cancel()

    def worker_pids(self) -> list[int]:
        """The process ids of the decoder processes."""
        with self._state.lock:
            return [w.process.pid for w in self._state.workers if w.process.pid]

    def busy_pids(self) -> list[int]:
        """The process ids of the workers running a decode now."""
        with self._state.lock:
            return [w.process.pid for w in self._state.workers if w.task is not None and w.process.pid]

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "DecoderPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
