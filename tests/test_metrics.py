"""Evaluation maths on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from exprengine.evaluation.metrics import (fid_from_features, frechet_distance, gaussian_statistics,
                                           inception_score, psnr, ssim)


def test_psnr_known_values():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    assert psnr(a, b) == float("inf")
    b[...] = 1                                                   # MSE 1 -> 20 log10(255)
    assert psnr(a, b) == pytest.approx(20 * np.log10(255))
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = True
    c = a.copy()
    c[4, 4] = 200                                                # outside the mask: ignored
    assert psnr(a, c, mask) == float("inf")


def test_ssim_identity_and_degradation(rng):
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(a, noisy) < 0.9
    assert ssim(a, 255 - a) < 0.1


def test_frechet_distance_known_answers(rng):
    # identical Gaussians: 0; 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == \
        pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    a, b = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # a rotation of both covariances leaves the distance unchanged
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_stays_exact_with_singular_covariances(rng):
    """Fewer samples than dimensions (an FID on a few images): covariances of rank N-1."""
    a = rng.normal(size=(6, 64))
    assert fid_from_features(a, a) == pytest.approx(0, abs=1e-8)
    shifted = a + 0.5                                   # same covariance, means apart by 0.5 per dimension
    assert fid_from_features(a, shifted) == pytest.approx(64 * 0.25, rel=1e-8)
    b = rng.normal(size=(6, 64)) * 2
    assert fid_from_features(a, b) > 0
    # closed form for commuting low-rank covariances: diag(s1), diag(s2) with zeros
    s1, s2 = np.diag([4.0, 0.0, 1.0, 0.0]), np.diag([1.0, 9.0, 0.0, 0.0])
    expected = 5 + 10 - 2 * 2.0                         # tr s1 + tr s2 - 2 tr sqrt(s1 s2), sqrt(diag(4,0,0,0))
    assert frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(expected, rel=1e-9)


def test_fid_from_samples_converges_to_the_closed_form(rng):
    x = rng.normal(0, 1, (20000, 2))
    y = rng.normal(1, 2, (20000, 2))
    assert fid_from_features(x, y) == pytest.approx(2 * 1 + 2 * (2 - 1) ** 2, rel=0.05)
    mu, cov = gaussian_statistics(x)
    assert mu.shape == (2,) and cov.shape == (2, 2)


def test_inception_score_known_answers():
    k = 10
    uniform = np.full((100, k), 1 / k)
    assert inception_score(uniform, splits=1)[0] == pytest.approx(1.0)           # no confidence: IS 1
    confident = np.eye(k)[np.arange(100) % k]                                   # sure and diverse: IS = K
    assert inception_score(confident, splits=1)[0] == pytest.approx(k, rel=1e-6)
    one_class = np.eye(k)[np.zeros(100, int)]                                   # sure, one class: IS 1
    assert inception_score(one_class, splits=1)[0] == pytest.approx(1.0, rel=1e-6)
    mean, std = inception_score(np.repeat(confident, 2, axis=0), splits=2)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0, abs=1e-6)
