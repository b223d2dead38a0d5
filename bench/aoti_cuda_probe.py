"""Does an AOTInductor CUDA package of our generator build and load here? (Run in a subprocess:
on torch 2.11.0+cu130 / H100 the load of an FP16 heads package segfaulted inside
torch.export.pt2_archive._load_aoti.) Prints one line per step, for bench/gpu.sh."""
import sys
import time

import torch

from exprengine.export.graph import export_program
from exprengine.models import create_generator

precision, model = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "convnext2"
dtype = torch.float16 if precision == "fp16" else torch.float32
g = create_generator(model).to("cuda", dtype)
t = time.time()
program = export_program(g, outputs="heads", max_batch=64)
path = torch._inductor.aoti_compile_and_package(program, package_path=f"/tmp/aoti-{precision}.pt2")
print(f"{precision}: compiled in {time.time() - t:.0f}s", flush=True)
runner = torch._inductor.aoti_load_package(path)
print(f"{precision}: loaded", flush=True)
x = torch.rand(3, 3, 128, 128, device="cuda", dtype=dtype) * 2 - 1
a = torch.rand(3, 17, device="cuda", dtype=dtype) * 0.4
c, att = runner(x, a)
with torch.inference_mode():
    rc, ra = g(x, a)
print(f"{precision}: ran, max |diff| color {(c - rc).abs().max().item():.2e}", flush=True)
