"""Application services: plain-Python runs (lock, steps, summary) that flows, the CLI, the
benchmarks and the tests all call; flows pass their task wrappers in."""
