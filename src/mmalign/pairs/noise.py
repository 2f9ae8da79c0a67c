"""POVID's image-side negatives: forward-diffusion noise on raw pixels in [0, 1].

POVID (Zhou et al. 2024, "Aligning Modalities in Vision Large Language Models via Preference
Fine-tuning") corrupts the image with the forward process of a DDPM (Ho et al. 2020, eq. 4):

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s)

with a 1000-step sigmoid schedule beta = sigmoid(linspace(-6, 6, 1000)) * (5e-3 - 1e-5) + 1e-5
and a fixed step t = 500. Two deliberate deviations from POVID's code (DESIGN section 6.2): the
noise is added to raw pixels in [0, 1] (POVID noised the CLIP-normalised tensor), and the result
is clamped back to [0, 1] so it is still an image. Fresh noise is drawn on every call; pass a
`torch.Generator` to make it reproducible.
"""

from __future__ import annotations

import torch

NUM_STEPS = 1000
BETA_MIN = 1e-5
BETA_MAX = 5e-3
DEFAULT_STEP = 500


def beta_schedule(num_steps: int = NUM_STEPS) -> torch.Tensor:
    """beta_t for t = 0..num_steps-1 (float64, shape [num_steps])."""
    return torch.sigmoid(torch.linspace(-6, 6, num_steps, dtype=torch.float64)) \
        * (BETA_MAX - BETA_MIN) + BETA_MIN


def alpha_bar(num_steps: int = NUM_STEPS) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s) (float64, shape [num_steps]); the signal kept at t."""
    return torch.cumprod(1.0 - beta_schedule(num_steps), dim=0)


def add_diffusion_noise(x0: torch.Tensor, step: int = DEFAULT_STEP, *,
                        generator: torch.Generator | None = None,
                        num_steps: int = NUM_STEPS, clamp: bool = True) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, eps ~ N(0, I), clamped to [0, 1].

    x0: raw pixels in [0, 1], any shape (e.g. [C, H, W] or [N, C, H, W]); returns the same
    shape and dtype. `step` is 0-based (POVID's t = 500 indexes its 1000-entry schedule).
    `clamp=False` returns the Gaussian draw itself (for checking its moments).
    """
    if not 0 <= step < num_steps:
        raise ValueError(f"noise step {step} is outside [0, {num_steps})")
    abar = alpha_bar(num_steps)[step].item()
    # randn on x0's device; the generator (if any) must live on the same device.
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
    noisy = abar ** 0.5 * x0.float() + (1.0 - abar) ** 0.5 * eps
    if clamp:
        noisy = noisy.clamp_(0.0, 1.0)
    return noisy.to(x0.dtype)


def add_noise_to_normalized(pixel_values: torch.Tensor, mean: list[float], std: list[float],
                            step: int = DEFAULT_STEP, *,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise a processor's normalised `pixel_values` on its raw [0, 1] pixels.

    Processors give (x - mean) / std per channel; we undo that, noise x in [0, 1] with
    `add_diffusion_noise`, and normalise again, so the model sees the noisy image exactly as
    if the noisy picture had gone through the processor (at the model's input resolution,
    like POVID, which noised the resized tensor). Channel layout:
      [..., C, H, W] (LLaVA [N, C, H, W], Idefics3 [B, N, C, H, W]): channel dim is -3;
      [N, C * rest] (Qwen2-VL's flattened patches, channel-major): viewed as [N, C, rest].
    Images that are exactly zero everywhere are padding slots (Idefics3 batches pad with
    them and detects them by that); they stay zero.
    """
    c = len(mean)
    if pixel_values.dim() >= 4 or (pixel_values.dim() == 3 and pixel_values.shape[0] == c):
        x = pixel_values
        shape = [1] * x.dim()
        shape[-3] = c
    elif pixel_values.dim() == 2 and pixel_values.shape[1] % c == 0:
        x = pixel_values.view(pixel_values.shape[0], c, -1)
        shape = [1, c, 1]
    else:
        raise ValueError(f"cannot tell the channel dimension of pixel_values with shape "
                         f"{tuple(pixel_values.shape)} for {c} channels")
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape)
    raw = (x.float() * s + m).clamp(0.0, 1.0)  # [..., C, ...] back to [0, 1]
    noisy = (add_diffusion_noise(raw, step, generator=generator) - m) / s
    if pixel_values.dim() >= 4:
        # a padding image: all values exactly zero over its [C, H, W]
        pad = (pixel_values == 0).flatten(-3).all(-1)[..., None, None, None]
        noisy = torch.where(pad, torch.zeros_like(noisy), noisy)
    return noisy.to(pixel_values.dtype).view(pixel_values.shape)
