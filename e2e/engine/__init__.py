"""The real-engine tier: vLLM's CPU build in its own virtualenv, tiny generated models, and a
launcher that serves them on 127.0.0.1 (see docs/engine.md)."""
