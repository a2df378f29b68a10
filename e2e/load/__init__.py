"""The load tier: a real load generator from PyPI (NVIDIA's AIPerf) in its own virtualenv, the
arrival patterns it replays, a round-robin gateway in front of a model's Ready pods, and a runner
that returns per-request results (see docs/autoscaling.md)."""
