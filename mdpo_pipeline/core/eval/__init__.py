"""Benchmark scorers: MMHal-Bench (LLM judge), Object HalBench (rule-based CHAIR) and AMBER."""
