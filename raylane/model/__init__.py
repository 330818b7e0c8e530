"""The model as an artifact: its schema, families, metrics, preprocessing, ONNX graph and store."""
