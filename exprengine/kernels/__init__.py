"""The engine's epilogue: the blend out = A * I0 + (1 - A) * C and the uint8 output pass.

`blend.py` holds the reference implementations (PyTorch and NumPy). The fused CUDA kernel
that a GPU engine runs instead lives in `csrc/` (GPU issue) and is tested against these.
"""
from exprengine.kernels.blend import blend, blend_to_uint8_nhwc, to_uint8_nhwc

__all__ = ["blend", "blend_to_uint8_nhwc", "to_uint8_nhwc"]
