"""Evaluation: image metrics (PSNR, SSIM, FID, IS) and an AU estimator independent of any critic."""
