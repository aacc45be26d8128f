"""Evaluation programs: generation for the benchmarks, scoring stages and the registry gate (no Dagster)."""
