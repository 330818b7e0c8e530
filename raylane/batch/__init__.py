"""Batch scoring of tables with a registered ONNX graph on Ray Data (``ray_jobs.batch_predict``)."""
