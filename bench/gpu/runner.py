"""Run the check's parts one after the other, each isolated, inside a time budget.

A part is a function of the shared `Context` returning a `PartResult`. The runner gives every
part a status: `ok`, `failed` (it raised, or it returned problems: a wrong number is a failure
even when nothing raised) or `skipped` (not selected, a part it needs did not succeed, or its
estimated cost no longer fits the budget). One part's exception never stops the next one: the
GPU window is short, so one bug must not cost the rest of the measurements. Results are handed
to `on_result` as soon as each part ends, so a run killed at its time limit still leaves them.
"""
from __future__ import annotations

import faulthandler
import gc
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

STATUSES = ("ok", "failed", "skipped")


@dataclass
class Context:
    """What every part sees: the options, and objects parts hand to later ones (`state`)."""

    device: str  # "cuda" or "cpu"
    config: Any  # SV3DConfig
    options: Any  # the parsed command line (argparse.Namespace)
    out: Path
    state: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class PartResult:
    summary: str  # one line for the table printed last
    data: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # non-empty: the part failed on its numbers


@dataclass(frozen=True)
class Part:
    name: str
    estimate_s: float  # measured or expected cost on an H200 at full size
    run: Callable[[Context], PartResult]
    what: str  # one line for --help
    needs: tuple[str, ...] = ()  # parts whose objects (ctx.state) this one uses
    enabled: Callable[[Context], str | None] = lambda ctx: None  # a reason to skip, or None


def _skip_reason(part: Part, ctx: Context, results: dict, left_s: float) -> str | None:
    only = getattr(ctx.options, "only", None)
    if only and part.name not in only:
        return "not selected (--only)"
    reason = part.enabled(ctx)
    if reason:
        return reason
    for dep in part.needs:
        status = results.get(dep, {}).get("status", "not run")
        if status != "ok":
            return f"needs part {dep!r}, which is {status}"
    if part.estimate_s > left_s:
        return f"budget: {left_s:.0f} s left, this part needs about {part.estimate_s:.0f} s"
    return None


def _release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a sticky CUDA error: the next part reports it
            pass


def run_part(part: Part, ctx: Context) -> dict:
    """Run one part, catching everything it raises: -> its JSON record (no `name`)."""
    # A hang must not eat the window silently: dump every thread's stack if the part runs far
    # past its estimate (the run goes on; the stacks say where it stuck).
    faulthandler.dump_traceback_later(max(120.0, 3 * part.estimate_s), exit=False)
    t0 = time.perf_counter()
    try:
        result = part.run(ctx)
        record = {"status": "failed" if result.problems else "ok", "summary": result.summary,
                  "data": result.data}
        if result.problems:
            record["reason"] = "; ".join(result.problems)
    except Exception as e:  # noqa: BLE001 - isolation is the point: record it, run the next part
        message = str(e).strip().splitlines()
        record = {"status": "failed", "reason": f"{type(e).__name__}: {message[0] if message else ''}",
                  "summary": "", "traceback": traceback.format_exc(limit=12).splitlines()[-40:]}
    finally:
        faulthandler.cancel_dump_traceback_later()
    record["seconds"] = time.perf_counter() - t0
    _release_memory()
    return record


def run_parts(parts: list[Part], ctx: Context, budget_s: float,
              on_result: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """Run `parts` in order within `budget_s` seconds -> {name: record}."""
    results: dict[str, dict] = {}
    start = time.perf_counter()
    for part in parts:
        left = budget_s - (time.perf_counter() - start)
        reason = _skip_reason(part, ctx, results, left)
        if reason:
            record = {"status": "skipped", "reason": reason, "summary": "", "seconds": 0.0}
        else:
            record = run_part(part, ctx)
        record["estimate_s"] = part.estimate_s
        results[part.name] = record
        if on_result is not None:
            on_result(part.name, record)
    return results
