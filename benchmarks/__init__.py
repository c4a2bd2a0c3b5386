"""Benchmarks: throughput, memory and side-by-side comparisons with PyTorch references."""
