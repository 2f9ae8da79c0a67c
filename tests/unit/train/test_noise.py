"""POVID's diffusion noise against the closed form of its schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmalign.pairs.noise import (
    add_diffusion_noise,
    add_noise_to_normalized,
    alpha_bar,
    beta_schedule,
)


def closed_form_abar(t: int, n: int = 1000) -> float:
    """abar_t = prod_{s<=t} (1 - beta_s), beta_s = sigmoid(x_s) * (5e-3 - 1e-5) + 1e-5,
    x = linspace(-6, 6, n): written out with math, independently of the code under test."""
    out = 1.0
    for s in range(t + 1):
        x = -6 + 12 * s / (n - 1)
        beta = 1 / (1 + math.exp(-x)) * (5e-3 - 1e-5) + 1e-5
        out *= 1 - beta
    return out


def test_schedule_matches_closed_form():
    betas = beta_schedule()
    assert betas.shape == (1000,)
    assert math.isclose(betas[0].item(), 1 / (1 + math.exp(6)) * (5e-3 - 1e-5) + 1e-5)
    assert math.isclose(betas[-1].item(), 1 / (1 + math.exp(-6)) * (5e-3 - 1e-5) + 1e-5)
    assert bool((betas[1:] > betas[:-1]).all())  # sigmoid schedule: increasing
    for t in (0, 250, 500, 999):
        assert math.isclose(alpha_bar()[t].item(), closed_form_abar(t), rel_tol=1e-12)


def test_noise_moments_match_the_forward_process():
    """Unclamped: x_t ~ N(sqrt(abar) x0, 1 - abar) per pixel."""
    abar = closed_form_abar(500)
    x0 = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    eps = (add_diffusion_noise(x0, 500, generator=gen, clamp=False) - math.sqrt(abar) * x0)
    n = eps.numel()
    var = 1 - abar
    # mean within 5 standard errors; variance within 5 standard errors (normal: 2 var^2 / n)
    assert abs(eps.mean().item()) < 5 * math.sqrt(var / n)
    assert abs(eps.var().item() - var) < 5 * math.sqrt(2 * var ** 2 / n)


def test_clamped_noise_is_the_clamp_of_the_same_draw_and_matches_its_mean():
    x0 = torch.full((3, 200, 200), 0.7)
    clamped = add_diffusion_noise(x0, 500, generator=torch.Generator().manual_seed(3))
    raw = add_diffusion_noise(x0, 500, generator=torch.Generator().manual_seed(3), clamp=False)
    assert clamped.min() >= 0 and clamped.max() <= 1
    assert (raw < 0).any() and (raw > 1).any()  # t = 500 is strong enough to need clamping
    torch.testing.assert_close(clamped, raw.clamp(0, 1))
    # E[clamp(Y, 0, 1)] for Y ~ N(mu, s^2): mu (Phi(b) - Phi(a)) + s (phi(a) - phi(b)) + 1 - Phi(b)
    abar = closed_form_abar(500)
    mu, s = math.sqrt(abar) * 0.7, math.sqrt(1 - abar)
    a, b = -mu / s, (1 - mu) / s
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    expected = mu * (cdf(b) - cdf(a)) + s * (phi(a) - phi(b)) + 1 - cdf(b)
    assert abs(clamped.mean().item() - expected) < 5 * 0.5 / math.sqrt(clamped.numel())


def test_fresh_noise_each_call_and_reproducible_with_a_seed():
    x0 = torch.rand(3, 8, 8)
    gen = torch.Generator().manual_seed(5)
    first, second = add_diffusion_noise(x0, generator=gen), add_diffusion_noise(x0, generator=gen)
    assert not torch.equal(first, second)
    again = add_diffusion_noise(x0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert add_diffusion_noise(x0, 0).sub(x0).abs().max() < 0.05  # t = 0 barely moves pixels
    with pytest.raises(ValueError, match="outside"):
        add_diffusion_noise(x0, 1000)


def test_noise_on_normalised_pixels_is_noise_on_raw_pixels():
    mean, std = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]
    raw = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixel_values = (raw - m) / s  # what a CLIP processor hands the model
    got = add_noise_to_normalized(pixel_values, mean, std, 500,
                                  generator=torch.Generator().manual_seed(9))
    want = (add_diffusion_noise(raw, 500, generator=torch.Generator().manual_seed(9)) - m) / s
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    back = got * s + m
    assert back.min() > -1e-5 and back.max() < 1 + 1e-5  # still an image after un-normalising


def test_padding_images_stay_zero_and_flat_patches_work():
    mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    batch = torch.rand(2, 2, 3, 8, 8) * 2 - 1  # Idefics3: [B, images, C, H, W]
    batch[1, 1] = 0  # a padding slot
    noisy = add_noise_to_normalized(batch, mean, std, 500)
    assert torch.equal(noisy[1, 1], torch.zeros(3, 8, 8))
    assert not torch.equal(noisy[0, 0], batch[0, 0])
    patches = torch.rand(10, 3 * 2 * 14 * 14) * 2 - 1  # Qwen2-VL: channel-major patch rows
    out = add_noise_to_normalized(patches, mean, std, 500)
    assert out.shape == patches.shape
    assert np.isfinite(out.numpy()).all()
    with pytest.raises(ValueError, match="channel"):
        add_noise_to_normalized(torch.rand(10, 7), mean, std)
