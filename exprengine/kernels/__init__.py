"""The engine's epilogue: the blend out = A * I0 + (1 - A) * C and the uint8 output pass.

`blend.py` holds the reference implementations (PyTorch and NumPy), used by every CPU
backend. GPU engines run the fused CUDA kernels of `csrc/epilogue.cu` instead, compiled and
launched by `cuda.py` (imported on demand: it needs cuda-bindings); tests compare them
bit for bit against these references.
"""
from exprengine.kernels.blend import blend, blend_to_uint8_nhwc, to_uint8_nhwc

__all__ = ["blend", "blend_to_uint8_nhwc", "to_uint8_nhwc"]
