"""FLOPs per stage, counted from the modules and from the exported graphs, never hand-typed.

Convention (torch.utils.flop_counter's, and the roofline's): matmul-class work only, one
multiply-add = 2 FLOPs; Linear/MatMul/Gemm 2·M·N·K, convolution 2·out·(C_in/groups)·kernel,
attention QK^T + PV = 4·batch·heads·L_q·L_k·d. Elementwise ops, norms and softmax are not
counted: they are the memory-bound glue the copy bandwidth bounds, not the compute floor.

`reference_flops` runs the reference networks on the meta device under FlopCounterMode: the
shapes flow, nothing is computed or allocated, so the full 1.5B-parameter UNet is counted in
seconds on a CPU. These are the model's FLOPs: the work every backend must do at least, before
any exact algebraic shortcut (the cross-attention fold removes some, counted as `step_folded`),
so "achieved TFLOP/s" compares backends on the same work.

`onnx_graph_flops` counts an exported graph (after onnx shape inference): what that backend's
graph really computes (e.g. the folded step of the ort/tensorrt backends).
"""
from __future__ import annotations

import math
import os
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..models.config import SV3DConfig



def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode knows the CUDA attention kernels but not the CPU flash kernel that SDPA
# dispatches to on CPU tensors (it would count 0); same FLOPs as the CUDA flash kernel.
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul-class FLOPs of everything `fn` runs (on any device, meta included)."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def reference_flops(config: SV3DConfig, steps: int) -> dict[str, int]:
    """FLOPs of each benchmark stage for the reference networks of `config` (meta device).

    Stages: clip, vae_encode, encode (both), context (the fold's to_out(to_v(ctx)), once per
    generation), step (UNet on the CFG batch of 2T frames), step_folded (the same step after the
    cross-attention fold), denoise (`steps` steps), decode (all T frames, whatever the chunk:
    the decoder works frame by frame), end_to_end (encode + denoise + decode).
    """
    from ..models.checkpoint import build_module
    from ..models.fold import attn2_modules, attn2_outputs, fold_cross_attention

    T, S, h = config.num_frames, config.image_size, config.latent_size
    u = config.unet
    with torch.device("meta"):
        clip = build_module("clip", config)
        vae_encoder = build_module("vae_encoder", config)
        vae_decoder = build_module("vae_decoder", config)
        unet = build_module("unet", config)
        image = torch.empty(1, 3, S, S)
        clip_embedding = torch.empty(1, u.context_dim)
        n = 2 * T  # the CFG batch: uncond and cond halves
        x = torch.empty(n, u.in_channels, h, h)
        timesteps, y = torch.empty(n), torch.empty(n, u.adm_in_channels)
        attn2 = attn2_outputs(attn2_modules(unet).values(), clip_embedding)  # (2, C_i) each
        folded = fold_cross_attention(unet)
        out = {
            "clip": count_flops(lambda: clip.encode_image(image)),
            "vae_encode": count_flops(lambda: vae_encoder(image)),
            "context": count_flops(lambda: attn2_outputs(attn2_modules(unet).values(), clip_embedding)),
            "step": count_flops(lambda: unet(x, timesteps, torch.empty(n, 1, u.context_dim), y)),
            "step_folded": count_flops(lambda: folded(x, timesteps, y, attn2)),
        }
        # 2-D convs and per-frame attention: linear in frames, the same for every chunk size.
        out["decode"] = T * count_flops(lambda: vae_decoder(torch.empty(1, config.vae.z_channels, h, h)))
    out["encode"] = out["clip"] + out["vae_encode"]
    out["denoise"] = steps * out["step"]
    out["end_to_end"] = out["encode"] + out["denoise"] + out["decode"]
    return out


def stage_flops_key(stage: str) -> str:
    """The reference_flops key of a benchmark stage ("decode_7" -> "decode")."""
    return "decode" if stage.startswith("decode_") else stage


# ---------------------------------------------------------------------------------------
# ONNX graphs


def _shapes(model) -> dict[str, tuple[int, ...] | None]:
    """Static shape of every value of a shape-inferred graph (None where a dim is symbolic)."""
    shapes = {}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value for d in dims) if all(d.HasField("dim_value") for d in dims) else None
    return shapes


def _node_flops(node, shapes: dict) -> int | None:
    """FLOPs of one node from its input/output shapes; None if a needed shape is unknown."""
    def shape(i: int, outputs: bool = False):
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    op = node.op_type
    if op in ("MatMul", "Gemm", "Conv", "ConvTranspose", "TemporalAttention"):
        a, b, out = shape(0), shape(1), shape(0, outputs=True)
        if op == "TemporalAttention":  # q (B*T, S, heads, d), attribute frames = T
            if a is None:
                return None
            frames = next(attr.i for attr in node.attribute if attr.name == "frames")
            return 4 * math.prod(a) * frames
        if a is None or b is None or out is None:
            return None
        if op == "MatMul":  # (..., M, K) @ (..., K, N)
            return 2 * math.prod(out) * a[-1]
        if op == "Gemm":
            trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
            return 2 * math.prod(out) * (a[0] if trans_a else a[1])
        if op == "Conv":  # W (C_out, C_in/groups, *kernel)
            return 2 * math.prod(out) * math.prod(b[1:])
        return 2 * math.prod(a) * math.prod(b[1:])  # ConvTranspose: W (C_in, C_out/groups, *kernel)
    return 0


def onnx_graph_flops(path: str | os.PathLike) -> dict:
    """Matmul-class FLOPs of an exported ONNX graph: {"total", "by_op", "unresolved"}.

    Weights in external data are not read (only their dims are needed). `unresolved` lists
    the matmul-class nodes whose shapes inference could not pin down (then total is a floor).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    model = onnx.shape_inference.infer_shapes(model)
    shapes = _shapes(model)
    by_op: dict[str, int] = {}
    unresolved = []
    for node in model.graph.node:
        flops = _node_flops(node, shapes)
        if flops is None:
            unresolved.append(node.name or node.op_type)
        elif flops:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + flops
    return {"total": sum(by_op.values()), "by_op": by_op, "unresolved": unresolved}
