"""Load benchmarks for Aula's real-time classroom (see docs/benchmarks.md)."""
