"""Tensor surgery that streams: expansion, chat vector, merging (one tensor at a time)."""
