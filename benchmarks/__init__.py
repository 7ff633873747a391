"""Benchmarks that compare the engine with outside code; not part of the product."""
