"""Where one step's time goes: torch.profiler events sorted into performance.md's categories.

On CUDA the events are the device's kernels, memcpys and memsets (their own durations); on a
CPU the aten operators' self time. Names are matched by the first rule that fits, in this
order, because names overlap: cuDNN's convolutions are "implicit_gemm" kernels, its attention
and layout kernels are "cudnn" too, and `direct_copy_kernel` does both contiguous copies and
dtype casts (it counts as a copy: the name cannot tell the two apart).
"""
from __future__ import annotations

import re
from collections import defaultdict

CATEGORIES = ("attention", "copies/layout", "norms", "conv", "gemm", "elementwise", "other")

_RULES: tuple[tuple[str, re.Pattern], ...] = tuple((cat, re.compile(rx, re.IGNORECASE)) for cat, rx in (
    ("attention", r"flash|fmha|attention|sdpa|softmax_warp|_temporal_attention_fwd"),
    ("copies/layout", r"nchwtonhwc|nhwctonchw|transpose|permute|copy|memcpy|memset|catarray|\bcat\b|aten::cat$"
                      r"|contiguous|clone|layout|gather|scatter|index|aten::(stack|repeat|expand)"),
    ("norms", r"norm|welford|moments|_group_norm_fwd|_layer_norm_fwd"),
    ("conv", r"conv|fprop|dgrad|wgrad|implicit_gemm|winograd|cudnn"),
    ("gemm", r"gemm|nvjet|cublas|cutlass|matmul|splitk|aten::(mm|addmm|bmm|baddbmm|linear)$"),
    ("elementwise", r"elementwise|vectorized|unrolled|reduce|silu|gelu|sigmoid|_geglu_fwd|_blend_fwd|triton"
                    r"|aten::(add|mul|sub|div|where|exp|erf|sigmoid|silu|gelu|to|_to_copy|fill_|isfinite|all|sum)"),
))


def category(name: str) -> str:
    """performance.md's category of one kernel / operator name."""
    for cat, rule in _RULES:
        if rule.search(name):
            return cat
    return "other"


def _device_events(events, cuda: bool):
    """(name, microseconds) of every timed event: CUDA kernels on a GPU, aten self time on a CPU."""
    from torch.autograd import DeviceType

    for e in events:
        if cuda and e.device_type == DeviceType.CUDA:
            yield e.name, e.time_range.elapsed_us()
        elif not cuda and e.device_type == DeviceType.CPU and e.name.startswith("aten::"):
            yield e.name, e.self_cpu_time_total


def summarize(events, cuda: bool, top: int = 15) -> dict:
    """{"total_ms", "by_category": [{category, ms, share, count}], "top": [...], "other": [...]}."""
    by_cat: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    by_name: dict[str, float] = defaultdict(float)
    for name, us in _device_events(events, cuda):
        cat = category(name)
        by_cat[cat] += us
        counts[cat] += 1
        by_name[name] += us
    total = sum(by_cat.values())
    rows = [{"category": c, "ms": by_cat[c] / 1e3, "share": by_cat[c] / total if total else 0.0, "count": counts[c]}
            for c in CATEGORIES if counts[c]]
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])
    return {
        "source": "CUDA kernels" if cuda else "aten self CPU time",
        "total_ms": total / 1e3,
        "by_category": rows,
        "top": [{"name": n[:120], "category": category(n), "ms": us / 1e3} for n, us in ranked[:top]],
        "other": [n[:120] for n, _ in ranked if category(n) == "other"][:top],
    }
