"""Image and distribution metrics.

    psnr(a, b)             10 log10(255^2 / MSE), uint8 images
    ssim(a, b)             structural similarity (Gaussian window, sigma 1.5; scikit-image)
    frechet_distance       ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))     (FID on Inception features)
    inception_score        exp(E_x KL(p(y|x) || p(y)))                      (IS on Inception class probabilities)

FID and IS need the standard Inception-v3 network's features and probabilities; the
functions here take those arrays, so the maths is tested on cases with known answers.
"""
from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between uint8 images (any matching shape); over `mask` pixels only if given."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b) ** 2
    if mask is not None:
        m = np.broadcast_to(mask[..., None] if mask.ndim == a.ndim - 1 else mask, a.shape)
        if not m.any():
            return float("inf")
        err = err[m]
    mse = float(err.mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 HxWx3 images (Wang et al. 2004 constants, Gaussian window)."""
    from skimage.metrics import structural_similarity
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, rows are samples) of [N,D] features."""
    f = np.asarray(features, np.float64)
    assert f.ndim == 2 and f.shape[0] > 1, f"need [N>1, D] features, got {f.shape}"
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    The trace term is computed as the sum of square roots of the eigenvalues of the symmetric
    matrix sigma1^(1/2) sigma2 sigma1^(1/2) (same spectrum as sigma1 sigma2), which stays exact
    when the covariances are singular (fewer samples than feature dimensions), where a general
    matrix square root returns round-off garbage.
    """
    from scipy import linalg
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    assert sigma1.shape == sigma2.shape == (mu1.size, mu1.size), "means and covariances disagree in size"
    w, v = linalg.eigh(sigma1)
    root1 = (v * np.sqrt(_numerical_rank_cut(w))) @ v.T
    inner = root1 @ sigma2 @ root1
    trace_covmean = np.sqrt(_numerical_rank_cut(linalg.eigvalsh((inner + inner.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def _numerical_rank_cut(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off below its numerical rank set to 0 (a square root
    would turn 1e-16 noise into 1e-8 per null direction)."""
    w = np.asarray(eigenvalues, np.float64)
    tolerance = w.size * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), 1e-300)
    return np.where(w > tolerance, w, 0.0)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two sets of Inception pool features, [Na,D] and [Nb,D] (Na, Nb > 1): the
    Frechet distance of their Gaussian statistics (Heusel et al. 2017). AssertionError for
    fewer than 2 rows or mismatched D."""
    return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))


def inception_score(probabilities: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` of exp(E_x KL(p(y|x) || p(y))) for [N,K] class probabilities."""
    p = np.asarray(probabilities, np.float64)
    assert p.ndim == 2 and np.allclose(p.sum(1), 1, atol=1e-4), "rows must be probability vectors"
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(marginal, 1e-12, None)))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
