"""GANimation's losses (SPEC section 4), each a small function with its equation.

Conventions: images in [-1, 1]; AUs as the network sees them (intensity / 5); the critic
returns (realness map [N,1,h,w], AU regression [N,17]); attention A = 1 keeps the input pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP: E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat = e * real + (1 - e) * fake, e ~ U(0,1) per sample
    (drawn with `generator`, or given as `weights` [N,1,1,1]: a process's part of a global batch's draw)."""
    e = weights if weights is not None else \
        torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    score, _ = critic(x_hat)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def au_regression(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the critic's AU estimate and the AUs (both intensity / 5), summed over AUs, mean over batch.

    GANimation sums over the 17 AUs (its weight ~160 at batch 25 is tuned for that)."""
    return F.mse_loss(predicted, target, reduction="sum") / predicted.shape[0]


def attention_mean(attention: torch.Tensor) -> torch.Tensor:
    """mean(A): keeps the mask from saturating at 1 (output = input, edit nothing)."""
    return attention.mean()


def total_variation(attention: torch.Tensor) -> torch.Tensor:
    """sum of squared differences between neighbouring mask pixels, mean over batch (smooth masks)."""
    dh = (attention[:, :, 1:, :] - attention[:, :, :-1, :]) ** 2
    dw = (attention[:, :, :, 1:] - attention[:, :, :, :-1]) ** 2
    return (dh.sum() + dw.sum()) / attention.shape[0]


def cycle(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """L1 between the image edited to the target and back to its own AUs, and the original."""
    return F.l1_loss(reconstruction, original)


def paired(edited: torch.Tensor, truth: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """L1 to the true edit (synthetic world: the renderer's face with the target AUs), over all
    pixels plus over the pixels the expression changes (M: truth != source in any channel):

        mean|x' - x*| + sum(M |x' - x*|) / (3 sum(M))

    The second term keeps small edits (a blink, a dimple) from drowning in the unchanged pixels,
    where copying the input is already right."""
    error = (edited - truth).abs()
    changed = ((truth - source).abs().amax(dim=1, keepdim=True) > 1e-6).to(error.dtype)
    return error.mean() + (error * changed).sum() / (3 * changed.sum()).clamp_min(1.0)
