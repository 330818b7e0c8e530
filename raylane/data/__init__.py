"""Tables in: reading, schema inference, splits and the holdout."""
