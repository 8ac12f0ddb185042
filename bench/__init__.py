"""Benchmarks: ``python -m bench.<name>`` from the repo root; results in ``bench/results/``."""
