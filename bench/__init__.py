"""Benchmarks that print figures and ratios (run as python -m bench.<name>)."""
