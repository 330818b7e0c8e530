"""The model as an artifact: its schema, families, metrics, preprocessing, ONNX graph, store,
and the contract that feeds a table's rows to that graph."""
