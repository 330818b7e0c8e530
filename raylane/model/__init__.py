"""The model as the rest of the loop sees it: its schema, its ONNX graph and the contract that
feeds a table's rows to that graph."""
