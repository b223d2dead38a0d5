"""Exporters: a generator or the rig -> portable graphs with a dynamic batch axis.

`graph`: the graphs' interface (inputs, outputs, the wrappers) and torch.export;
`onnx_graph`: checked ONNX files with metadata. Engines are built from these
(`exprengine.engines.build`); the command line is the repository's `export/export_model.py`.
"""
