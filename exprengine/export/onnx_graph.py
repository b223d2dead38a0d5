"""Export a generator to ONNX: dynamic batch, opset 18, checked, with metadata.

Metadata (ONNX `metadata_props`, all strings) lets any consumer use the file without us:
model name and config, AU order and scale, input normalisation, image size, the graph's
inputs and outputs ("blended" or "heads") and the weights' sha256 (for the rig, which has no
weights, `rig_sha256`). The rig's graph has a third input, `landmarks` (float32 [N,478,2]:
MediaPipe's face mesh in the crop's pixels); it runs GridSample (opset 16+).
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import onnx
import torch

from exprengine import __version__
from exprengine.aus import AU_NAMES, AU_SCALE
from exprengine.export.graph import (
    OUTPUT_NAMES,
    GraphOutputs,
    dynamic_shapes,
    example_inputs,
    exported_module,
    graph_inputs,
)
from exprengine.files import write_bytes
from exprengine.models import AttentionGenerator, is_rig
from exprengine.models.weights import model_sha256

OPSET = 18
INPUT_NORMALISATION = "image: uint8 RGB / 127.5 - 1 -> [-1, 1], NCHW; aus: OpenFace intensity (0..5) / 5"
LANDMARKS = ("MediaPipe Face Landmarker 478-point mesh, float32 [N,478,2]: x, y in the crop's pixels "
             "(x right, y down, pixel i spans [i, i+1))")


def graph_metadata(generator: AttentionGenerator, outputs: GraphOutputs) -> dict[str, str]:
    """The ONNX `metadata_props` (all strings) written with `generator`'s graph (module docstring):
    exprengine version, model name and config (JSON), AU order and scale, input normalisation,
    image size, the graph's inputs and `outputs`, the weights' sha256, and for the rig the
    landmarks' convention. `export_onnx` adds `exprengine.precision`.
    """
    cfg = generator.config
    return {
        "exprengine.version": __version__,
        "exprengine.model": cfg.name,
        "exprengine.config": json.dumps(cfg.to_dict()),
        "exprengine.au_order": ",".join(AU_NAMES),
        "exprengine.au_scale": f"{AU_SCALE:g}",
        "exprengine.input_normalisation": INPUT_NORMALISATION,
        "exprengine.image_size": str(cfg.image_size),
        "exprengine.inputs": ",".join(graph_inputs(generator)),
        "exprengine.outputs": outputs,
        "exprengine.weights_sha256": model_sha256(generator),
    } | ({"exprengine.landmarks": LANDMARKS} if is_rig(generator) else {})


def export_onnx(generator: AttentionGenerator, path: str | Path, outputs: GraphOutputs = "blended",
                max_batch: int = 256, precision: str = "fp32") -> Path:
    """Write a checked ONNX model with a dynamic batch axis to `path` (one self-contained file).

    precision "fp16": inputs, weights and outputs in FP16, norm layers in FP32 between casts
    (`exprengine.models.precision`), for strongly typed TensorRT networks (generators only).
    The rig's graph takes `landmarks` as its third input. Returns `path`.

    Raises ValueError for a `precision` other than "fp32" / "fp16", fp16 for the rig, or
    `outputs` other than "blended" / "heads"; onnx's checker errors pass through.
    """
    path = Path(path)
    metadata = graph_metadata(generator, outputs)
    inputs = graph_inputs(generator)
    if precision == "fp16" and is_rig(generator):
        raise ValueError("the rig is exported in fp32 only")
    if precision == "fp16":
        from exprengine.models.precision import half_with_fp32_norms
        generator = half_with_fp32_norms(generator)
    elif precision != "fp32":
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    metadata["exprengine.precision"] = precision
    module = exported_module(generator, outputs)
    return _write_onnx(module, example_inputs(generator), list(inputs), list(OUTPUT_NAMES[outputs]), max_batch,
                       metadata, path)


LATS_INPUT_NORMALISATION = "image: uint8 RGB / 127.5 - 1 -> [-1, 1], NCHW; style: interpolated class styles"


def lats_graph_metadata(generator, graph: str) -> dict[str, str]:
    """The ONNX `metadata_props` of graph `graph` ("encoder" or "decoder") of a LATS generator:
    exprengine version, model name and config (JSON), image size, the graph's name, inputs and
    outputs, `exprengine.outputs` "image" (the decoder's tanh image; the manifest's
    `graph_outputs`), input normalisation, the weights' sha256. `export_lats_onnx` adds
    `exprengine.precision`."""
    from exprengine.export.graph import LATS_GRAPHS
    cfg = generator.config
    inputs, outputs = LATS_GRAPHS[graph]
    return {
        "exprengine.version": __version__,
        "exprengine.model": cfg.name,
        "exprengine.config": json.dumps(cfg.to_dict()),
        "exprengine.image_size": str(cfg.image_size),
        "exprengine.graph": graph,
        "exprengine.inputs": ",".join(inputs),
        "exprengine.graph_outputs": ",".join(outputs),
        "exprengine.outputs": "image",
        "exprengine.input_normalisation": LATS_INPUT_NORMALISATION,
        "exprengine.weights_sha256": model_sha256(generator),
    }


def export_lats_onnx(generator, path: str | Path, graph: str, max_batch: int = 256) -> Path:
    """Write graph `graph` ("encoder" or "decoder", `export.graph.LATS_GRAPHS`) of a LATS generator
    as a checked FP32 ONNX model (opset 18, one self-contained file, metadata `lats_graph_metadata`)
    with a dynamic batch axis (named "batch", shared by the decoder's two inputs). Returns `path`.
    ValueError for another graph name; onnx's checker errors pass through."""
    from exprengine.export.graph import LATS_GRAPHS, lats_example_inputs, lats_graph_module
    path = Path(path)
    module = lats_graph_module(generator, graph)
    inputs, outputs = LATS_GRAPHS[graph]
    metadata = lats_graph_metadata(generator, graph)
    metadata["exprengine.precision"] = "fp32"
    return _write_onnx(module, lats_example_inputs(generator, graph), list(inputs), list(outputs), max_batch,
                       metadata, path)


def read_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's `metadata_props` as {key: value} (strings), e.g. "exprengine.precision"; the
    weights are not loaded. onnx's errors pass through for a file that is not ONNX.
    """
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _write_onnx(module, example, input_names: list[str], output_names: list[str], max_batch: int,
                metadata: dict[str, str], path: Path) -> Path:
    """Export `module` on `example` with the dynamo exporter (opset OPSET, one self-contained file,
    the exporters' log chatter silenced), name the dynamic axis "batch", set `metadata`, run the
    full ONNX checker and write `path` atomically. Returns `path`."""
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example, input_names=input_names, output_names=output_names,
                dynamic_shapes=dynamic_shapes(max_batch, input_names),
                opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    model = program.model_proto
    # The exporter names the dynamic axis after the Dim; make it explicit and readable.
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    write_bytes(path, model.SerializeToString())          # atomic: whole or untouched
    return path
