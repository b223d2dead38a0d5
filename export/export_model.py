"""Export a model to a portable graph: ONNX (`.onnx`) or a torch.export program (`.pt2`).

The command-line entry point of `exprengine.export` (the code lives in the package, so it also
imports from a source checkout). The graph's interface (inputs, outputs, metadata) is described
in `exprengine/export/graph.py` and `exprengine/export/onnx_graph.py`; `exprengine build` uses
the same functions to make engines.

    python export/export_model.py --out default.onnx                      # the shipped default model
    python export/export_model.py --model rig --out rig.onnx              # the AU rig (3 inputs)
    python export/export_model.py --model ganimation --checkpoint 30_net_gen.pth --out g.onnx
    python export/export_model.py --checkpoint cx6.safetensors --model convnext6 \\
        --outputs heads --precision fp16 --out cx6-heads-fp16.onnx
    python export/export_model.py --checkpoint cx6.safetensors --model convnext6 --out cx6.pt2

The format follows the suffix of --out. A `.pt2` file loads with `torch.export.load(path)`; its
`module()(image, aus)` runs the graph. Errors in what was asked (a missing checkpoint, an unknown
model, an unwritable --out) are one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

FORMATS = {".onnx": "ONNX", ".pt2": "torch.export program"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="export_model.py", description=__doc__.split("\n\n")[0],
        epilog="Without --model and --checkpoint: the shipped default model.")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="generator architecture or 'rig' (see `exprengine models`); with a "
                             "checkpoint, the architecture it holds [default: the shipped model's]")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="weights: our .safetensors, or a GANimation .pth in either public layout; "
                             "--model without it exports random weights (for testing the toolchain only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation [0]")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="file to write: .onnx (ONNX, opset 18, with metadata) or .pt2 (torch.export)")
    parser.add_argument("--outputs", choices=("blended", "heads"), default="blended",
                        help="the edited image and attention (blended), or the heads C and A that GPU "
                             "engines blend in their fused kernel (heads) [blended]")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="ONNX only: fp16 inputs, weights and outputs, norms in fp32 (generators only) [fp32]")
    parser.add_argument("--max-batch", type=int, default=256, metavar="N",
                        help="largest batch of the dynamic batch axis [256]")
    return parser.parse_args(argv)


def export(args: argparse.Namespace) -> str:
    """Write the graph asked for by `args`; returns the summary line."""
    from exprengine.errors import UserError
    from exprengine.files import check_writable_place, write_bytes

    out = Path(args.out)
    kind = FORMATS.get(out.suffix.lower())
    if kind is None:
        raise UserError(f"--out must end in {' or '.join(FORMATS)} (the format follows the suffix), got {out.name!r}")
    if args.max_batch < 1:
        raise UserError(f"--max-batch must be at least 1, got {args.max_batch}")
    if kind != "ONNX" and args.precision != "fp32":
        raise UserError("--precision fp16 is for ONNX graphs; a .pt2 program is exported in fp32")
    check_writable_place(out, [args.checkpoint] if args.checkpoint else [])
    from exprengine.models import load_model
    loaded = load_model(args.model, args.checkpoint, args.seed)
    model, source = loaded.model, loaded.source
    if loaded.random_init:
        print(f"note: no --checkpoint: exporting a randomly initialised {args.model} (seed {args.seed}); it "
              "exercises the toolchain but edits nothing meaningfully", file=sys.stderr)
    if kind == "ONNX":
        from exprengine.export.onnx_graph import export_onnx
        try:
            export_onnx(model, out, args.outputs, args.max_batch, args.precision)
        except ValueError as e:                       # e.g. the rig in fp16
            raise UserError(str(e)) from None
    else:
        import torch

        from exprengine.export.graph import export_program
        buffer = io.BytesIO()
        torch.export.save(export_program(model, args.outputs, args.max_batch), buffer)
        write_bytes(out, buffer.getvalue())
    return f"wrote {out}: {kind} of {model.config.name} ({source}), {args.outputs} outputs, batch 1..{args.max_batch}"


def main(argv: list[str] | None = None) -> int:
    """Run the command; a `UserError` becomes one line on stderr and exit status 2."""
    from exprengine.errors import UserError

    args = parse_args(argv)
    try:
        print(export(args))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
