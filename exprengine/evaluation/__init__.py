"""Evaluation: image metrics (PSNR, SSIM, FID, IS), and AU and apparent-age estimators independent of any critic."""
