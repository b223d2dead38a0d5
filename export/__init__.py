"""Exporters (installed as `exprengine.export`): PyTorch generator -> portable graphs."""
