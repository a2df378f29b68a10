"""Shared test configuration."""

import os

from hypothesis import settings

# The operator's autoscaler ticks this often in tests (read when its handlers are imported).
os.environ.setdefault("MMOP_AUTOSCALE_INTERVAL_SECONDS", "2")

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")
