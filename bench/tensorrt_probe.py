"""Which TensorRT builder is importable here, and can it build a tiny FP16 network on this GPU?

Prints one line per step; used by bench/gpu.sh to record whether TensorRT (or TensorRT for
RTX) runs on the lent GPU. The real engine build is the tensorrt backend in bench/gpu.py.
"""
import sys

import torch

from exprengine.engines.backends.tensorrt_backend import import_tensorrt

print("GPU:", torch.cuda.get_device_name(), "compute capability %d.%d" % torch.cuda.get_device_capability())
trt = import_tensorrt()
if trt is None:
    print("no TensorRT builder importable (tensorrt, tensorrt_rtx)")
    sys.exit(0)
print("builder module:", trt.__name__, trt.__version__)
try:
    logger = trt.Logger(trt.Logger.VERBOSE if "-v" in sys.argv else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    print("Builder created:", builder is not None)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = network.add_input("x", trt.float16, (1, 8))
    layer = network.add_activation(x, trt.ActivationType.RELU)
    network.mark_output(layer.get_output(0))
    config = builder.create_builder_config()
    plan = builder.build_serialized_network(network, config)
    print("tiny network built:", plan is not None, f"({plan.nbytes if plan is not None else 0} bytes)")
    if plan is not None:
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        print("deserialised:", engine is not None)
except Exception as e:  # record whatever happens
    print("failed:", type(e).__name__, str(e)[:500])
