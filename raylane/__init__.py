"""Raylane: a tabular model from a Ray Tune search to an autoscaled ONNX service on Ray Serve."""

__version__ = "0.1.0"
