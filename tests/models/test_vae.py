"""VAE encoder (posterior mean) and image decoder vs diffusers' AutoencoderKL (sv3d.md §3, §8b)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sv3d_trt.models.config import get_config
from sv3d_trt.models.vae import VAEDecoder, VAEEncoder

from official import official_shapes, randomize_
from tests.conftest import rel_err

ENCODER_PREFIX = "conditioner.embedders.1.encoder."
DECODER_PREFIX = "first_stage_model.decoder."


def test_full_keys_match_checkpoint():
    with torch.device("meta"):
        encoder = VAEEncoder(get_config("full").vae)
        decoder = VAEDecoder(get_config("full").vae)
    enc_shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    dec_shapes = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert enc_shapes == official_shapes(ENCODER_PREFIX, r"(encoder|quant_conv)\.")
    assert dec_shapes == official_shapes(DECODER_PREFIX)
    assert sum(p.numel() for p in decoder.parameters()) == 49_490_179
    assert sum(p.numel() for p in encoder.parameters()) == 34_163_592 + 72  # encoder + quant_conv


def test_tiny_has_full_key_names():
    full, tiny = get_config("full").vae, get_config("tiny").vae
    with torch.device("meta"):
        assert list(VAEEncoder(tiny).state_dict()) == list(VAEEncoder(full).state_dict())
        assert list(VAEDecoder(tiny).state_dict()) == list(VAEDecoder(full).state_dict())


def diffusers_peer(cfg, encoder: VAEEncoder, decoder: VAEDecoder):
    """diffusers AutoencoderKL with our weights, converted by diffusers' own LDM-VAE key mapping."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    levels = len(cfg.ch_mult)
    config = dict(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult),
        layers_per_block=cfg.num_res_blocks,
        latent_channels=cfg.z_channels,
        norm_num_groups=cfg.norm_groups,
        use_post_quant_conv=False,  # SV3D's first stage decodes z directly (sv3d.md §3)
    )
    ldm = dict(encoder.state_dict())
    ldm.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    peer = diffusers.AutoencoderKL(**config).eval()
    peer.load_state_dict(convert_ldm_vae_checkpoint(ldm, config), strict=True)
    return peer


def _parity(cfg, image_size: int, seed: int) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(seed)
    encoder, decoder = VAEEncoder(cfg).eval(), VAEDecoder(cfg).eval()
    randomize_(encoder, gen)
    randomize_(decoder, gen)
    peer = diffusers_peer(cfg, encoder, decoder)
    image = torch.rand(2, 3, image_size, image_size, generator=gen) * 2 - 1
    latent_size = image_size // cfg.downsample
    z = torch.randn(2, cfg.z_channels, latent_size, latent_size, generator=gen)
    with torch.no_grad():
        mean_expected = peer.encode(image).latent_dist.mean
        mean_actual = encoder(image)
        image_expected = peer.decode(z).sample
        image_actual = decoder(z)
    assert mean_actual.shape == (2, cfg.z_channels, latent_size, latent_size)
    assert image_actual.shape == (2, cfg.out_channels, image_size, image_size)
    assert mean_expected.std() > 0.1 and image_expected.std() > 0.1
    enc_err, dec_err = rel_err(mean_actual, mean_expected), rel_err(image_actual, image_expected)
    assert enc_err <= 1e-5 and dec_err <= 1e-5, (enc_err, dec_err)
    return enc_err, dec_err


def test_matches_diffusers_tiny():
    _parity(get_config("tiny").vae, image_size=64, seed=0)


def test_matches_diffusers_two_levels():
    # Two levels and one res block: exercises the config-driven level count and widths.
    _parity(replace(get_config("tiny").vae, ch_mult=(1, 2), num_res_blocks=1), image_size=24, seed=1)


@pytest.mark.slow
def test_matches_diffusers_full():
    _parity(get_config("full").vae, image_size=64, seed=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_forward(dtype):
    cfg = get_config("tiny").vae
    gen = torch.Generator().manual_seed(3)
    encoder, decoder = VAEEncoder(cfg).eval(), VAEDecoder(cfg).eval()
    randomize_(encoder, gen)
    randomize_(decoder, gen)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    z = torch.randn(1, cfg.z_channels, 8, 8, generator=gen)
    with torch.no_grad():
        expected = encoder(image), decoder(z)
        actual = encoder.to(dtype)(image), decoder.to(dtype)(z)
    tolerance = 2e-2 if dtype == torch.float16 else 8e-2
    for a, e in zip(actual, expected):
        assert a.dtype == dtype and a.isfinite().all()
        assert rel_err(a.float(), e) <= tolerance


def test_builds_on_meta_and_loads_with_assign():
    cfg = get_config("tiny").vae
    source = VAEDecoder(cfg)
    with torch.device("meta"):
        model = VAEDecoder(cfg)
    model.load_state_dict(source.state_dict(), assign=True, strict=True)
    z = torch.randn(1, cfg.z_channels, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(z), source(z))
