"""Data-quality gates: Great Expectations suites and SQL checks (DESIGN §8)."""
