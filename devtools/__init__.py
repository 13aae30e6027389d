"""Tooling for the demo, the tests, the benchmarks and infra/local: not part of the shipped packages."""
