"""MLflow: runs, plots, trial logging, experiments, the registry and its errors."""
