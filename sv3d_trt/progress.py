"""One progress style for every command: rich bars on a terminal, plain lines elsewhere.

rich's live display draws nothing while its output is a file or a pipe and prints the final
table only when it stops, so a long first stage (an export's calibration, a checkpoint load)
looked like a hang in a log. Off a terminal `Progress` instead writes one line when a stage
starts, one when it ends (with its elapsed seconds), and a line every `heartbeat_s` seconds
while a counted stage runs.

Libraries report progress through plain callbacks and never import this module; the CLI
turns those callbacks into stages:

    with Progress() as progress:
        with progress.stage("denoise mug.png", total=50) as advance:   # a stage of 50 steps
            pipe.generate(..., on_step=lambda i: advance())
        reconstruct_mesh(..., progress=progress.report)                # report(stage, done, total)
        progress.print("ok mug.png")                                   # a line above the bars

`add_task` / `update` / `advance` / `remove_task` follow rich's `Progress` (what TensorRT's
build monitor drives); every task is a stage.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, TextIO


@dataclass
class _Stage:
    description: str
    total: int | None
    completed: int = 0
    start: float = field(default_factory=time.perf_counter)
    last_line: float = field(default_factory=time.perf_counter)
    rich_id: int | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def count(self) -> str:
        return f"{self.completed}/{self.total} " if self.total and self.total > 1 else ""  # not for one-step stages


class Progress:
    """Stages of a command. file: where progress goes (default stderr, so stdout keeps only
    the results); live: bars or lines (default: bars when `file` is a terminal)."""

    def __init__(self, file: TextIO | None = None, live: bool | None = None, heartbeat_s: float = 30.0):
        from rich.console import Console

        self.console = Console(file=file or sys.stderr)
        self.live = self.console.is_terminal if live is None else live
        self.heartbeat_s = heartbeat_s
        self._stages: dict[int, _Stage] = {}
        self._next_id = 0
        self._current: int | None = None  # the stage `report` is updating
        self._bars = None
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.progress import Progress as RichProgress

            self._bars = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)

    def __enter__(self) -> "Progress":
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        for task in list(self._stages):
            self._finish(task, keep=True, ok=exc_type is None)
        if self._bars is not None:
            self._bars.stop()

    def _line(self, text: str) -> None:
        self.console.file.write(text + "\n")
        self.console.file.flush()

    # ---- rich's task API ------------------------------------------------------------------

    def add_task(self, description: str, total: int | None = None) -> int:
        """Start a stage; total None: a stage without a count (shown as running)."""
        task, self._next_id = self._next_id, self._next_id + 1
        stage = self._stages[task] = _Stage(description, total)
        if self._bars is not None:
            stage.rich_id = self._bars.add_task(description, total=total)
        else:
            self._line(f"{description} ...")
        return task

    def update(self, task: int, completed: int | None = None, total: int | None = None) -> None:
        stage = self._stages.get(task)
        if stage is None:
            return
        stage.completed = stage.completed if completed is None else completed
        stage.total = stage.total if total is None else total
        if self._bars is not None:
            self._bars.update(stage.rich_id, completed=stage.completed, total=stage.total)
        elif time.perf_counter() - stage.last_line >= self.heartbeat_s and not (
                stage.total and stage.completed >= stage.total):  # the end line follows
            stage.last_line = time.perf_counter()
            self._line(f"{stage.description}: {stage.count()}{stage.elapsed():.1f} s")

    def advance(self, task: int, n: int = 1) -> None:
        stage = self._stages.get(task)
        if stage is not None:
            self.update(task, completed=stage.completed + n)

    def remove_task(self, task: int) -> None:
        """End a stage (TensorRT's phases: their bars go, their lines stay)."""
        self._finish(task, keep=False, ok=True)

    def _finish(self, task: int, keep: bool, ok: bool) -> None:
        """End a stage: its line with the elapsed time; keep: leave its bar on screen."""
        stage = self._stages.pop(task, None)
        if stage is None:
            return
        if task == self._current:
            self._current = None
        if self._bars is None:
            outcome = "done in" if ok else "stopped after"
            self._line(f"{stage.description}: {stage.count()}{outcome} {stage.elapsed():.1f} s")
        elif keep:
            self._bars.update(stage.rich_id, completed=stage.total or 1, total=stage.total or 1)
            self._bars.stop_task(stage.rich_id)
        else:
            self._bars.remove_task(stage.rich_id)

    # ---- the command's own stages ----------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """A stage around a block; yields advance(n=1)."""
        task = self.add_task(description, total)
        try:
            yield lambda n=1: self.advance(task, n)
        except BaseException:
            self._finish(task, keep=True, ok=False)
            raise
        self._finish(task, keep=True, ok=True)

    def report(self, description: str, done: int, total: int | None) -> None:
        """The libraries' callback form, progress(stage, done, total): a new description ends
        the stage before it and starts its own; done == total ends it."""
        current = self._stages.get(self._current) if self._current is not None else None
        if current is None or current.description != description:
            self.finish()
            self._current = self.add_task(description, total)
        self.update(self._current, completed=done, total=total)
        if total and done >= total:
            self.finish()

    def finish(self) -> None:
        """End the stage `report` is updating (before a line about its result)."""
        if self._current is not None:
            self._finish(self._current, keep=True, ok=True)

    def print(self, message: str) -> None:
        """A line of its own (above the bars on a terminal)."""
        if self._bars is not None:
            self._bars.console.print(message, highlight=False, markup=False)
        else:
            self._line(message)
