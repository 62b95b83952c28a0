"""The exact cross-attention fold: a transform applied to a VideoUNet from outside (sv3d.md §1.7).

Every cross-attention (`attn2`) of SV3D attends to ONE context token per frame (the CLIP
embedding, or zeros in the uncond half). Softmax over a single key is exactly 1, so
attention returns that token's value for every query:

    attn2(x, ctx) = to_out(to_v(ctx))        for every query row of x

independent of x. The output depends on the video only (every frame of a video carries the
same context, and the temporal block uses the first frame's), so the 32 attn2 outputs
(16 spatial `transformer_blocks.0.attn2` + 16 temporal `time_stack.0.attn2`) are computed
once per generation by `folded_context` and the denoiser receives them as inputs:
to_q, to_k, QK^T, softmax, PV and the per-step to_v/to_out disappear from every step, and
so does `norm2`, whose only consumer is attn2.

Block order (fixed, documented, = state-dict order): attn2 modules in `named_modules()`
order, i.e. for each SpatialVideoTransformer in input_blocks, middle_block, output_blocks
order, first `transformer_blocks.0.attn2` (spatial), then `time_stack.0.attn2` (temporal).
`attn2_names(unet)` lists them.

The plain model stays the reference; `fold_cross_attention` returns a folded copy that shares
the weight tensors (no extra memory) and works in any dtype, on any device, with no host
syncs, so it exports and torch.compiles.

Equality (tests/export/test_fold.py, tiny config, random weights): every attn2 output of a real
forward equals its folded value to 9.7e-16 relative in fp64 (the per-module claim); end to end
in fp32 the folded UNet differs from the plain one by 8.4e-7 .. 9.7e-7 relative (4 seeds),
GEMM rounding of to_out on 2 rows instead of 2T*L, below the model's own fp32 floor (a one-ulp
perturbation of x moves the output by 1.7e-6).
"""
from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from typing import Iterable

import torch
from torch import nn

from .attention import BasicTransformerBlock, CrossAttention, VideoTransformerBlock
from .config import SV3DConfig

# Softmax FLOPs per score: max, subtract, exp, sum, divide (the usual 5-op count).
SOFTMAX_FLOPS_PER_SCORE = 5


def copy_sharing_weights(module: nn.Module) -> nn.Module:
    """A structural copy of `module` whose parameters and buffers ARE the original tensors.

    Swapping submodules of the copy leaves the original untouched, and nothing is duplicated,
    which matters at full size (6 GB of fp32 UNet weights).
    """
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def attn2_modules(unet: nn.Module) -> "OrderedDict[str, CrossAttention]":
    """The 32 cross-attentions of a plain VideoUNet, name -> module, in the documented fold order."""
    out = OrderedDict()
    for name, block in unet.named_modules():
        if isinstance(block, (BasicTransformerBlock, VideoTransformerBlock)):
            out[f"{name}.attn2"] = block.attn2
    return out


def attn2_names(unet: nn.Module) -> list[str]:
    """Module paths of the folded attn2 outputs, in fold order (works on plain and folded UNets)."""
    if isinstance(unet, FoldedVideoUNet):
        return list(unet.names)
    return list(attn2_modules(unet))


def attn2_outputs(attns: Iterable[CrossAttention], clip_embedding: torch.Tensor) -> list[torch.Tensor]:
    """to_out(to_v(ctx)) of each attn2 for ctx = [0, clip]: list of (2, C_i), row 0 uncond, row 1 cond.

    clip_embedding: (1, context_dim). The uncond half sees context = 0 (sv3d.md §4.5), whose
    output is to_out(to_v(0)) = to_out.0.bias. Computed in the weights' dtype, as the unfolded
    UNet computes its attn2 (`VideoUNet.forward` casts the context to that dtype).
    """
    out = []
    for attn in attns:
        ctx = torch.cat([torch.zeros_like(clip_embedding), clip_embedding]).to(attn.to_v.weight.dtype)  # (2, D)
        out.append(attn.to_out(attn.to_v(ctx)))  # (2, C_i)
    return out


def folded_context(unet: nn.Module, clip_embedding: torch.Tensor) -> list[torch.Tensor]:
    """The 32 attn2 outputs of one generation for a plain VideoUNet, in fold order: 32 x (2, C_i)."""
    return attn2_outputs(attn2_modules(unet).values(), clip_embedding)


class FoldedCrossAttention(nn.Module):
    """attn2 after the fold: returns its own slice of the packed per-row context values.

    The UNet passes the packed values (N, 1, P) where the plain model passes the CLIP context
    (N, 1, D); the result (N, 1, C) broadcasts over the L query rows in the residual add
    `x = attn2(...) + x`, exactly as the unfolded output (N, L, C) of identical rows.
    """

    def __init__(self, offset: int, width: int):
        super().__init__()
        self.offset = offset
        self.width = width

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x: (N, L, C) ignored; context: (N, 1, P) packed folded values
        return context[..., self.offset : self.offset + self.width]  # (N, 1, C)


class FoldedVideoUNet(nn.Module):
    """A VideoUNet whose attn2 outputs are inputs: forward(x, timesteps, y, attn2_values).

    attn2_values: sequence of 32 tensors (B, C_i), one row per video (B = N / num_frames; in
    the CFG batch B = 2: uncond, cond), in fold order. Each row is broadcast to the T frames
    of its video (frame-major batch, as everywhere in the UNet).
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = copy_sharing_weights(unet)
        self.names: list[str] = []
        self.widths: list[int] = []
        offset = 0
        for name, block in self.unet.named_modules():
            if isinstance(block, (BasicTransformerBlock, VideoTransformerBlock)):
                width = block.attn2.to_out[0].out_features
                block.attn2 = FoldedCrossAttention(offset, width)
                block.norm2 = nn.Identity()  # its only consumer was attn2
                self.names.append(f"{name}.attn2")
                self.widths.append(width)
                offset += width

    @property
    def config(self):
        return self.unet.config

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor,
                attn2_values: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """x: (B*T, 8, h, w); timesteps: (B*T,); y: (B*T, adm). Returns (B*T, 4, h, w)."""
        frames = self.unet.config.num_frames
        packed = torch.cat(list(attn2_values), dim=-1)  # (B, P)
        b, p = packed.shape
        context = packed[:, None, None, :].expand(b, frames, 1, p).reshape(b * frames, 1, p)  # (B*T, 1, P)
        return self.unet(x, timesteps, context, y)


def fold_cross_attention(unet: nn.Module) -> FoldedVideoUNet:
    """Fold every attn2 of a plain VideoUNet; the original is left as is (weights shared)."""
    return FoldedVideoUNet(unet)


# ---------------------------------------------------------------------------------------
# FLOPs removed per step, counted from the module shapes.


def _attn2_query_shapes(unet: nn.Module, config: SV3DConfig) -> "OrderedDict[str, tuple[int, int]]":
    """(rows N, tokens L per row) of the query entering every attn2 during one denoise step.

    Runs a meta-device UNet with hooks (no memory, no compute): N = 2T (the CFG batch), L = H*W
    of that attention site.
    """
    T, h, u = config.num_frames, config.latent_size, config.unet
    shapes: OrderedDict[str, tuple[int, int]] = OrderedDict()
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: shapes.__setitem__(name, tuple(args[0].shape[:2])))
             for name, m in attn2_modules(unet).items()]
    with torch.device("meta"):
        unet(torch.empty(2 * T, u.in_channels, h, h), torch.empty(2 * T), torch.empty(2 * T, 1, u.context_dim),
             torch.empty(2 * T, u.adm_in_channels))
    for hook in hooks:
        hook.remove()
    return shapes


def fold_flops_removed(config: SV3DConfig) -> dict:
    """Exact FLOP count of the attn2 work the fold removes from one denoise step (CFG batch 2T).

    Conventions: a multiply-add is 2 FLOPs; a Linear on R rows is 2 R in out (+ R out with
    bias); SDPA scales each score once (1 FLOP) and softmax costs 5 FLOPs per score.
    For one attn2 with N rows of L query tokens (Q = N L queries), C = inner width, D =
    context width, M = 1 context token, h heads:
        to_q 2QC^2, to_k 2NMDC, to_v 2NMDC, QK^T 2QMC, scale Q h M, softmax 5 Q h M,
        PV 2QMC, to_out 2QC^2 + QC.
    The fold adds, once per generation: to_v and to_out on 2 rows (uncond, cond) per attn2.
    The residual add x + attn2 stays (it broadcasts the folded value), so it is not counted.
    """
    from .unet import VideoUNet

    with torch.device("meta"):
        unet = VideoUNet(config.unet)
    modules = attn2_modules(unet)
    per_module = OrderedDict()
    totals: dict[str, int] = {}
    added_once = 0
    for name, (n, length) in _attn2_query_shapes(unet, config).items():
        attn = modules[name]
        c, d, heads, m = attn.to_q.out_features, attn.to_k.in_features, attn.heads, 1
        q = n * length
        parts = {
            "to_q": 2 * q * attn.to_q.in_features * c,
            "to_k": 2 * n * m * d * c,
            "to_v": 2 * n * m * d * c,
            "qk": 2 * q * m * c,
            "scale": q * heads * m,
            "softmax": SOFTMAX_FLOPS_PER_SCORE * q * heads * m,
            "pv": 2 * q * m * c,
            "to_out": 2 * q * c * attn.to_out[0].out_features + q * attn.to_out[0].out_features,
        }
        per_module[name] = {"rows": n, "tokens": length, "flops": sum(parts.values())}
        for k, v in parts.items():
            totals[k] = totals.get(k, 0) + v
        added_once += 2 * 2 * d * c + 2 * 2 * c * attn.to_out[0].out_features + 2 * attn.to_out[0].out_features
    return {
        "config": config.name,
        "per_step": sum(totals.values()),
        "by_op": totals,
        "per_module": per_module,
        "added_once_per_generation": added_once,
    }
