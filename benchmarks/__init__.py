"""Benchmarks of flageval against its floor and its peers (see README.md)."""
