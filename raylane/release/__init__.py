"""From a fitted model to a registered version: export, gates, judging, the decision, publish."""
