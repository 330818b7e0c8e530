"""The training job: the search, one trial's fit, stops and the summary."""
