"""The fast/ transforms on their own: the plain UNet stays untouched, the hoisted frame embedding
is the reference one, FastOptions per device, the chunked decoder (CPU, fp32, tiny config)."""
from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from sv3d_trt.errors import NumericsError
from sv3d_trt.fast import FastOptions, RuntimeUNet
from sv3d_trt.fast.decode import bytes_per_frame, decode_latents, fitting_chunk
from sv3d_trt.fast.hoist import frame_embedding
from sv3d_trt.models.attention import SpatialVideoTransformer


def test_plain_unet_is_untouched(tiny_checkpoint):
    """The transforms edit a weight-sharing copy: the plain UNet keeps its modules, tensors, values."""
    from sv3d_trt.models.checkpoint import load_checkpoint

    unet = load_checkpoint(tiny_checkpoint, components=("unet",)).unet
    before = {k: (v.data_ptr(), v.clone(), v.stride()) for k, v in unet.state_dict().items()}
    types = [type(m) for m in unet.modules()]
    runtime = RuntimeUNet(unet, FastOptions())
    assert [type(m) for m in unet.modules()] == types
    for k, v in unet.state_dict().items():
        ptr, value, stride = before[k]
        assert v.data_ptr() == ptr and v.stride() == stride and torch.equal(v, value), k
    # ... and the runtime copy really was transformed
    assert type(runtime.net.unet.input_blocks[1][0]).__name__ == "FusedVideoResBlock"
    assert runtime.net.unet.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_frame_embedding_is_the_reference_one(tiny_checkpoint):
    from sv3d_trt.models.attention import FRAME_EMBED_PERIOD
    from sv3d_trt.models.checkpoint import load_checkpoint
    from sv3d_trt.models.unet_blocks import timestep_embedding

    unet = load_checkpoint(tiny_checkpoint, components=("unet",)).unet
    svt = next(m for m in unet.modules() if isinstance(m, SpatialVideoTransformer))
    T, c = unet.config.num_frames, svt.proj_in.in_features
    expected = svt.time_pos_embed(timestep_embedding(torch.arange(T), c, FRAME_EMBED_PERIOD))
    table = frame_embedding(svt, T)
    assert table.shape == (T, c) and table.std() > 0.01
    torch.testing.assert_close(table, expected, rtol=0, atol=0)


def test_options():
    switches = [f.name for f in fields(FastOptions) if f.type == "bool"]  # transforms + cuda_graph
    assert not any(getattr(FastOptions.reference(), name) for name in switches)
    assert FastOptions().for_device("cpu").cuda_graph is False
    assert FastOptions().for_device("cuda").cuda_graph is True
    assert FastOptions(compile="reduce-overhead").for_device("cuda").cuda_graph is False
    with pytest.raises(ValueError, match="compile mode"):
        FastOptions(compile="fastest")


def test_decode_chunking_and_check(tiny_checkpoint):
    from sv3d_trt.models.checkpoint import load_checkpoint

    models = load_checkpoint(tiny_checkpoint, components=("vae_decoder",))
    cfg = models.config
    z = torch.randn(2, 4, cfg.latent_size, cfg.latent_size, generator=torch.Generator().manual_seed(0))
    whole = decode_latents(models.vae_decoder, z, 2)
    assert whole.shape == (2, 3, cfg.image_size, cfg.image_size) and whole.std() > 0.01
    torch.testing.assert_close(decode_latents(models.vae_decoder, z, 1), whole, rtol=1e-5, atol=1e-5)
    with pytest.raises(NumericsError, match="NaN/inf"):
        decode_latents(models.vae_decoder, torch.full_like(z[:1], float("nan")), 1)
    assert fitting_chunk(cfg, torch.float32, torch.device("cpu"), 14) == 14
    # full config, fp16: 10 x (128 ch x 576^2 x 2 B) per frame
    from sv3d_trt.models.config import get_config

    assert bytes_per_frame(get_config("full"), torch.float16) == 10 * 128 * 576 * 576 * 2
