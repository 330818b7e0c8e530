"""Helpers the tests share: paths and ports, real servers (MLflow, Ray, Serve, the console), the
training job as a process, and the process bookkeeping that checks a run leaves nothing behind.

Importable as ``support.<module>`` (``pythonpath`` in pyproject.toml puts tests/ on the path)."""
