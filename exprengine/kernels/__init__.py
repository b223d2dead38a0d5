"""The fused CUDA prologue and epilogue of GPU engines: `epilogue.cu`, compiled with NVRTC and
launched by `cuda.py` (imported on demand: it needs cuda-bindings).

Their plain references, which every CPU backend runs and tests compare against bit for bit,
are `exprengine.pixels.to_network_input` (prologue) and `exprengine.pixels.blend_to_uint8_nhwc`
(epilogue: out = A * I0 + (1 - A) * C, then rint((out + 1) * 127.5) as uint8 NHWC).
"""
