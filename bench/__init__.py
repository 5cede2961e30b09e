"""Benchmarks: speed is measured here, as ratios within one run, never asserted in tests."""
