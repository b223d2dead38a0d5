"""Engines: building, verifying and running a generator (or the rig) ahead of time.

- `engines.backends`: the backend registry (`get_backend`, `backend_names`, ...) and one module
  per backend (PyTorch, torch.compile, AOTInductor, ONNX Runtime, TensorRT) on the `Backend`
  base class;
- `engines.build`: generator -> engine directory (manifest + artifacts), verified against eager
  FP32 PyTorch;
- `engines.manifest`: `engine.json`, what an engine directory holds and depends on;
- `engines.cuda_pipeline`: the uint8-in, uint8-out GPU hot path shared by the CUDA backends.

Loading and running an engine is `exprengine.engine.Engine`, one room above.
"""
