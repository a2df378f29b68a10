"""End-to-end infrastructure and tests: the local sandbox cluster and traffic/install tests."""
