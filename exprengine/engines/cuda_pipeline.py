"""The GPU hot path shared by every CUDA backend: uint8 frames in, uint8 frames out, one stream.

    pinned host --H2D--> frames u8 [1|N,S,S,3], intensities f32 [N,17]
        -> prologue kernel (CUDA)      x [N,3,S,S], aus [N,17]  (fp16 or fp32)
        -> network heads               color [N,3,S,S], attention [N,1,S,S]
        -> epilogue kernel (CUDA)      out u8 [N,S,S,3] = blend, [0,255], rint
    pinned host <--D2H--

Everything is enqueued on one CUDA stream with no host synchronisation until the output
is needed; device and pinned host buffers are allocated once for the maximum batch. With
`graphs=True` the whole sequence (copies included) is captured once per batch shape as a
CUDA graph and replayed: the steady state is one graph launch and one synchronisation
per call, with no per-frame host work. A morph passes one frame (broadcast to every AU
row by the kernels, never copied N times).

A network is any callable `(x, aus) -> (color, attention)` on CUDA tensors of the
pipeline's dtype that enqueues on PyTorch's current stream (eager/compiled PyTorch,
AOTInductor) or on the stream it is given (TensorRT: `network.set_stream`).

A LATS age engine's decoder runs in `LATSCudaDecoder`, the same way with its own ends:

    pinned host --H2D--> features f32 [1|N,C,s,s], styles f32 [N,D]  (cast to the pipeline's dtype)
        -> decoder network             image [N,3,S,S] (tanh, in [-1,1])
        -> output kernel (CUDA)        out u8 [N,S,S,3] = rint((x + 1) * 127.5), clamped
    pinned host <--D2H--

one row of features (a traversal's face) shared by every style, never copied N times.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from exprengine.aus import NUM_AUS
from exprengine.errors import EngineError
from exprengine.kernels.cuda import fused_kernels

Network = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
MAX_GRAPHS = 16                     # captured batch shapes kept (least recently used dropped)


class CudaPipeline:
    """The pixel-space hot path of one network on one CUDA device (see the module).

    `network`: (x [n,3,S,S], aus [n,17]) CUDA tensors of `dtype` -> (color [n,3,S,S], attention
    [n,1,S,S]); `image_size` S; `max_batch` the largest n (buffers are sized for it); `dtype`
    torch.float32 or torch.float16 (`exprengine.models.precision.torch_dtype`); `device` a CUDA
    device (its index defaults to the current one); `graphs`: capture each batch shape as a
    CUDA graph (a network that cannot be captured runs uncaptured, `graph_failure` says why).
    EngineError when no NVIDIA GPU is visible; the kernels' own errors (`fused_kernels`) when
    NVRTC cannot compile them.
    """

    def __init__(self, network: Network, image_size: int, max_batch: int, dtype: torch.dtype,
                 device: str | torch.device = "cuda", graphs: bool = True):
        if not torch.cuda.is_available():
            raise EngineError("this engine runs on CUDA, and no NVIDIA GPU is visible")
        self.network = network
        self.size = image_size
        self.max_batch = max_batch
        self.dtype = dtype
        self.device = torch.device(device)
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.graphs_enabled = graphs
        self.kernels = fused_kernels(self.device.index)
        self.stream = torch.cuda.Stream(self.device)
        s, b = image_size, max_batch
        dev = dict(device=self.device)
        # device buffers, allocated once
        self.frames_dev = torch.empty(b, s, s, 3, dtype=torch.uint8, **dev)
        self.intensities_dev = torch.empty(b, NUM_AUS, dtype=torch.float32, **dev)
        self.x = torch.empty(b, 3, s, s, dtype=dtype, **dev)
        self.aus = torch.empty(b, NUM_AUS, dtype=dtype, **dev)
        self.out_dev = torch.empty(b, s, s, 3, dtype=torch.uint8, **dev)
        # pinned host staging
        self.frames_host = torch.empty(b, s, s, 3, dtype=torch.uint8, pin_memory=True)
        self.intensities_host = torch.empty(b, NUM_AUS, dtype=torch.float32, pin_memory=True)
        self.out_host = torch.empty(b, s, s, 3, dtype=torch.uint8, pin_memory=True)
        self._graphs: OrderedDict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = OrderedDict()
        self.graph_replays = 0
        self.graph_failure: str | None = None

    # --- the enqueued sequence ----------------------------------------------------------------
    def _enqueue(self, n: int, nf: int) -> torch.Tensor:
        """H2D, prologue, network, epilogue, D2H on the current stream; returns the attention view."""
        frames, intensities = self.frames_dev[:nf], self.intensities_dev[:n]
        frames.copy_(self.frames_host[:nf], non_blocking=True)
        intensities.copy_(self.intensities_host[:n], non_blocking=True)
        x, aus = self.x[:n], self.aus[:n]
        self.kernels.frame_to_input(frames, intensities, x, aus)
        color, attention = self.network(x, aus)
        assert color.shape == (n, 3, self.size, self.size) and attention.shape == (n, 1, self.size, self.size), \
            f"network returned {tuple(color.shape)} and {tuple(attention.shape)}"
        out = self.out_dev[:n]
        self.kernels.blend_to_uint8(color.contiguous(), attention.contiguous(), frames, out)
        self.out_host[:n].copy_(out, non_blocking=True)
        return attention

    def _graph(self, n: int, nf: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        key = (n, nf)
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        # warm up on the side stream (cuDNN/cuBLAS plans, lazy module loading), then capture
        with torch.cuda.stream(self.stream):
            self._enqueue(n, nf)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            attention = self._enqueue(n, nf)
        self._graphs[key] = (graph, attention)
        while len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        return graph, attention

    # --- the call ----------------------------------------------------------------------------
    @torch.inference_mode()
    def run_frames(self, frames: np.ndarray, intensities: np.ndarray, want_attention: bool = False
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixel space: frames uint8 [1|N,S,S,3], intensities float32 [N,17] on the 0..5 scale
        -> (uint8 [N,S,S,3], attention float32 [N,S,S] in [0,1] or None unless `want_attention`).

        One frame is broadcast to every intensity row. 1 <= N <= max_batch (AssertionError
        otherwise: `Engine.run_frames` checks and splits before). The output array is the
        caller's (copied out of the pinned buffer, which the next call reuses).
        """
        n, nf = intensities.shape[0], frames.shape[0]
        assert frames.dtype == np.uint8 and frames.shape[1:] == (self.size, self.size, 3), \
            f"frames must be uint8 [1|N,{self.size},{self.size},3], got {frames.dtype} {frames.shape}"
        assert intensities.shape == (n, NUM_AUS), f"intensities must be [N,{NUM_AUS}], got {intensities.shape}"
        assert 1 <= n <= self.max_batch and nf in (1, n), f"batch {n} (frames {nf}) outside 1..{self.max_batch}"
        self.frames_host[:nf].numpy()[...] = frames
        self.intensities_host[:n].numpy()[...] = intensities
        graph = None
        if self.graphs_enabled:
            try:
                graph, attention = self._graph(n, nf)
            except RuntimeError as e:     # a network that cannot be captured still runs, uncaptured
                self.graphs_enabled = False
                self.graph_failure = str(e).splitlines()[0] if str(e) else type(e).__name__
                torch.cuda.synchronize(self.device)
        if graph is not None:
            with torch.cuda.stream(self.stream):       # replay on the stream we synchronise below
                graph.replay()
            self.graph_replays += 1
        else:
            with torch.cuda.stream(self.stream):
                attention = self._enqueue(n, nf)
        self.stream.synchronize()
        att = attention[:, 0].float().cpu().numpy() if want_attention else None
        return self.out_host[:n].numpy().copy(), att

    def run_network(self, image: np.ndarray, aus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network space, for verification: image float32 [N,3,S,S] in [-1,1], aus float32 [N,17]
        (intensity / 5) -> (blended output float32 [N,3,S,S] in [-1,1], attention float32 [N,1,S,S]).

        Runs the same network (in the pipeline's dtype) without the uint8 kernels, so the
        engine's float output can be compared with eager FP32 by relative error. N <= max_batch.
        """
        from exprengine.pixels import blend
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            x = torch.from_numpy(image).to(self.device)
            a = torch.from_numpy(aus).to(self.device)
            n = x.shape[0]
            self.x[:n].copy_(x)
            self.aus[:n].copy_(a)
            color, attention = self.network(self.x[:n], self.aus[:n])
            out = blend(x, color.float(), attention.float())
            result = out.cpu().numpy(), attention.float().cpu().numpy()
        self.stream.synchronize()
        return result


class LATSCudaDecoder:
    """The pixel-space hot path of a LATS engine's decoder on one CUDA device (see the module).

    `network`: (features [1|n,C,s,s], style [n,D]) CUDA tensors of `dtype` -> image [n,3,S,S]
    in [-1,1]; `feature_shape` (C, s); `style_dim` D; `image_size` S; `max_batch` the largest n
    (buffers are sized for it); `dtype` torch.float32 or torch.float16; `graphs`: capture each
    (n, features rows) shape as a CUDA graph (a network that cannot be captured runs uncaptured,
    `graph_failure` says why). EngineError when no NVIDIA GPU is visible.
    """

    def __init__(self, network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], feature_shape: tuple[int, int],
                 style_dim: int, image_size: int, max_batch: int, dtype: torch.dtype,
                 device: str | torch.device = "cuda", graphs: bool = True):
        if not torch.cuda.is_available():
            raise EngineError("this engine runs on CUDA, and no NVIDIA GPU is visible")
        self.network = network
        self.size, self.max_batch, self.dtype = image_size, max_batch, dtype
        self.device = torch.device(device)
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.graphs_enabled = graphs
        self.kernels = fused_kernels(self.device.index)
        self.stream = torch.cuda.Stream(self.device)
        c, f = feature_shape
        s, b = image_size, max_batch
        dev = dict(device=self.device)
        self.features_dev = torch.empty(b, c, f, f, dtype=dtype, **dev)
        self.style_dev = torch.empty(b, style_dim, dtype=dtype, **dev)
        self.out_dev = torch.empty(b, s, s, 3, dtype=torch.uint8, **dev)
        self.features_host = torch.empty(b, c, f, f, dtype=torch.float32, pin_memory=True)
        self.style_host = torch.empty(b, style_dim, dtype=torch.float32, pin_memory=True)
        self.out_host = torch.empty(b, s, s, 3, dtype=torch.uint8, pin_memory=True)
        self._graphs: OrderedDict[tuple[int, int], torch.cuda.CUDAGraph] = OrderedDict()
        self.graph_replays = 0
        self.graph_failure: str | None = None

    def _enqueue(self, n: int, nf: int) -> None:
        """H2D (with the cast), decoder, output kernel, D2H on the current stream."""
        features, style = self.features_dev[:nf], self.style_dev[:n]
        features.copy_(self.features_host[:nf], non_blocking=True)
        style.copy_(self.style_host[:n], non_blocking=True)
        image = self.network(features, style)
        assert image.shape == (n, 3, self.size, self.size), f"the decoder returned {tuple(image.shape)}"
        out = self.out_dev[:n]
        self.kernels.to_uint8(image.contiguous(), out)
        self.out_host[:n].copy_(out, non_blocking=True)

    def _graph(self, n: int, nf: int) -> torch.cuda.CUDAGraph:
        key = (n, nf)
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        with torch.cuda.stream(self.stream):        # warm up (cuDNN plans, lazy loading), then capture
            self._enqueue(n, nf)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            self._enqueue(n, nf)
        self._graphs[key] = graph
        while len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        return graph

    def _stage(self, features: np.ndarray, style: np.ndarray) -> tuple[int, int]:
        n, nf = style.shape[0], features.shape[0]
        assert features.shape[1:] == tuple(self.features_host.shape[1:]), \
            f"features must be [1|N,{','.join(map(str, self.features_host.shape[1:]))}], got {features.shape}"
        assert style.shape == (n, self.style_host.shape[1]), f"style must be [N,{self.style_host.shape[1]}], got {style.shape}"
        assert 1 <= n <= self.max_batch and nf in (1, n), f"batch {n} (features {nf}) outside 1..{self.max_batch}"
        self.features_host[:nf].numpy()[...] = features
        self.style_host[:n].numpy()[...] = style
        return n, nf

    @torch.inference_mode()
    def run_frames(self, features: np.ndarray, style: np.ndarray) -> np.ndarray:
        """features float32 [1|N,C,s,s], style float32 [N,D] -> uint8 [N,S,S,3] (the caller's copy).
        1 <= N <= max_batch (AssertionError otherwise: `Engine` splits before)."""
        n, nf = self._stage(features, style)
        graph = None
        if self.graphs_enabled:
            try:
                graph = self._graph(n, nf)
            except RuntimeError as e:      # a network that cannot be captured still runs, uncaptured
                self.graphs_enabled = False
                self.graph_failure = str(e).splitlines()[0] if str(e) else type(e).__name__
                torch.cuda.synchronize(self.device)
        with torch.cuda.stream(self.stream):
            if graph is not None:
                graph.replay()
                self.graph_replays += 1
            else:
                self._enqueue(n, nf)
        self.stream.synchronize()
        return self.out_host[:n].numpy().copy()

    @torch.inference_mode()
    def run_network(self, features: np.ndarray, style: np.ndarray) -> np.ndarray:
        """Network space, for verification: the same decoder in the pipeline's dtype without the
        uint8 kernel -> output float32 [N,3,S,S] in [-1,1]."""
        n, nf = self._stage(features, style)
        with torch.cuda.stream(self.stream):
            self.features_dev[:nf].copy_(self.features_host[:nf])
            self.style_dev[:n].copy_(self.style_host[:n])
            result = self.network(self.features_dev[:nf], self.style_dev[:n]).float().cpu().numpy()
        self.stream.synchronize()
        return result
