"""Benchmarks: `make bench` runs them side by side and writes JSON under bench/results/."""
