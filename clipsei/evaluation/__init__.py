"""Evaluation: noise injection, synthetic data and the benchmark harness (never imported by
the engine)."""
