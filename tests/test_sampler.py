"""EDM sampler math against closed forms and the reference's published values (sv3d.md §5)."""
import math

import numpy as np
import pytest

from sv3d_trt.sampler import (cfg_combine, denoised_from_output, edm_sigmas, euler_step, guided_euler_step,
                              initial_noise_scale, precondition, triangle_cfg_scales)


def test_sigmas_closed_form_and_reference_values():
    sigmas = edm_sigmas()
    assert sigmas.dtype == np.float64 and sigmas.shape == (51,)
    i = np.arange(50)
    lo, hi = 0.002 ** (1 / 7), 700.0 ** (1 / 7)
    expected = np.append((hi + i / 49 * (lo - hi)) ** 7, 0.0)
    np.testing.assert_allclose(sigmas, expected, rtol=1e-7, atol=0)
    # Values printed in sv3d.md §5 (rounded to 2 significant decimals / 3 significant figures).
    np.testing.assert_allclose(sigmas[:4], [700.0, 620.33, 548.56, 484.03], atol=5e-3)
    np.testing.assert_allclose(sigmas[-4:-1], [0.00768, 0.00405, 0.002], rtol=2e-3)
    assert sigmas[0] == pytest.approx(700.0, rel=1e-12) and sigmas[-2] == pytest.approx(0.002, rel=1e-12)
    assert sigmas[-1] == 0.0 and np.all(np.diff(sigmas) < 0)


def test_sigmas_rejects_one_step():
    with pytest.raises(ValueError, match="num_steps must be >= 2"):
        edm_sigmas(1)


@pytest.mark.parametrize("sigma", [700.0, 13.7, 1.0, 0.35, 0.002])
def test_precondition_closed_forms(sigma):
    c_skip, c_out, c_in, c_noise = precondition(sigma)
    assert c_skip == pytest.approx(1 / (sigma**2 + 1), rel=1e-7)
    assert c_out == pytest.approx(-sigma / math.sqrt(sigma**2 + 1), rel=1e-7)
    assert c_in == pytest.approx(1 / math.sqrt(sigma**2 + 1), rel=1e-7)
    assert c_noise == pytest.approx(0.25 * math.log(sigma), rel=1e-7)
    assert all(isinstance(c, float) for c in (c_skip, c_out, c_in, c_noise))


def test_precondition_arrays_and_tensors():
    sigmas = edm_sigmas()[:-1]
    c_skip, c_out, c_in, c_noise = precondition(sigmas)
    np.testing.assert_allclose(c_out, -sigmas / np.sqrt(sigmas**2 + 1), rtol=1e-12)
    np.testing.assert_allclose(c_noise, 0.25 * np.log(sigmas), rtol=1e-12)
    torch = pytest.importorskip("torch")
    t = torch.tensor(sigmas, dtype=torch.float64)
    for got, want in zip(precondition(t), (c_skip, c_out, c_in, c_noise)):
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_denoised_from_output_is_v_prediction():
    rng = np.random.default_rng(0)
    x0, noise = rng.standard_normal((2, 21, 4, 8, 8))
    sigma = 3.7
    x = x0 + sigma * noise
    # v-target for sigma_data = 1: F = (x0 - c_skip x) / c_out makes D exact.
    c_skip, c_out, _, _ = precondition(sigma)
    v = (x0 - c_skip * x) / c_out
    np.testing.assert_allclose(denoised_from_output(x, v, sigma), x0, rtol=1e-10, atol=1e-10)


def test_triangle_cfg_scales():
    scales = triangle_cfg_scales()
    expected = np.array([1.0 + 0.15 * min(j, 20 - j) for j in range(21)])
    np.testing.assert_allclose(scales, expected, rtol=0, atol=1e-12)
    assert scales[0] == 1.0 and scales[10] == 2.5 and scales[20] == 1.0 and scales[1] == pytest.approx(1.15)


def test_cfg_combine_per_frame_numpy_and_torch():
    rng = np.random.default_rng(1)
    d_u, d_c = rng.standard_normal((2, 21, 4, 6, 6)).astype(np.float32)
    scales = triangle_cfg_scales()
    out = cfg_combine(d_u, d_c, scales)
    assert out.dtype == np.float32
    for j in (0, 7, 10, 20):
        np.testing.assert_allclose(out[j], d_u[j] + scales[j] * (d_c[j] - d_u[j]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[0], d_c[0], rtol=1e-6, atol=1e-6)  # scale 1 -> the conditional prediction
    torch = pytest.importorskip("torch")
    got = cfg_combine(torch.from_numpy(d_u), torch.from_numpy(d_c), scales)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), out, rtol=1e-6, atol=1e-6)


def test_euler_step():
    rng = np.random.default_rng(2)
    x, d = rng.standard_normal((2, 21, 4, 8, 8))
    sigma, sigma_next = 5.0, 3.0
    np.testing.assert_allclose(euler_step(x, d, sigma, sigma_next), x + (sigma_next - sigma) * (x - d) / sigma)
    assert euler_step(x, d, 0.002, 0.0) is d  # last step returns the denoised prediction exactly
    assert euler_step(x, d, 0.002, np.float64(0.0)) is d


def _guided_reference(x, d_u, d_c, sigma, sigma_next, scales):
    """The guided step written out per frame in float64 (TrianglePredictionGuider + EulerEDMSampler)."""
    out = np.empty_like(x, dtype=np.float64)
    for j in range(len(x)):
        d = d_u[j] + scales[j] * (d_c[j] - d_u[j])
        out[j] = d if sigma_next == 0 else x[j] + (sigma_next - sigma) * (x[j] - d) / sigma
    return out


@pytest.mark.parametrize("sigma, sigma_next", [(5.0, 3.0), (0.002, 0.0)])
def test_guided_euler_step_numpy_torch_and_device_scalars(sigma, sigma_next):
    """One step for host floats, numpy arrays and tensors alike; tensor sigmas are never read on
    the host (a tensor that refuses bool()/float()/item() goes through), and the last step is D."""
    rng = np.random.default_rng(3)
    x, d_u, d_c = rng.standard_normal((3, 21, 4, 8, 8)).astype(np.float32)
    scales = triangle_cfg_scales().astype(np.float32)
    ref = _guided_reference(x, d_u, d_c, sigma, sigma_next, scales)
    host = guided_euler_step(x, d_u, d_c, sigma, sigma_next, scales)
    arrays = guided_euler_step(x, d_u, d_c, np.float32([sigma]), np.float32([sigma_next]), scales)
    for out in (host, arrays):
        assert out.dtype == np.float32 and out.shape == x.shape
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    torch = pytest.importorskip("torch")

    class DeviceScalar(torch.Tensor):
        def __bool__(self):
            raise AssertionError("host sync: bool() of a device scalar")

        def __float__(self):
            raise AssertionError("host sync: float() of a device scalar")

        def item(self):
            raise AssertionError("host sync: .item() of a device scalar")

    s, s_next = (torch.tensor(v, dtype=torch.float32).as_subclass(DeviceScalar) for v in (sigma, sigma_next))
    t = [torch.from_numpy(a) for a in (x, d_u, d_c)]
    got = guided_euler_step(*t, s, s_next, torch.from_numpy(scales))
    np.testing.assert_allclose(torch.Tensor(got).numpy(), ref, rtol=1e-5, atol=1e-5)
    if sigma_next == 0:  # exactly the guided prediction, not the formula's rounding of it
        np.testing.assert_array_equal(torch.Tensor(got).numpy(), cfg_combine(t[1], t[2], scales).numpy())


def test_initial_noise_scale():
    assert initial_noise_scale(700.0) == pytest.approx(math.sqrt(1 + 700.0**2), rel=1e-15)
    assert initial_noise_scale(700.0) == pytest.approx(700.000714, abs=1e-6)
