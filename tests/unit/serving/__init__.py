"""Unit tests of raylane.serving (in-process: the real app, no Ray, no server)."""
