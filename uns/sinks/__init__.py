"""Sinks beside the lake: the republisher and its JSON event encoders."""
