"""Serving the registered ONNX model with Ray Serve (see ``raylane.serving.app``)."""
