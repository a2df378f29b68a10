"""The local sandbox cluster: a real control plane from Go modules, kwok GPU nodes, vLLM stand-ins
at pod addresses, and Prometheus. Test and demo infrastructure: mmop's operator never imports it.
"""

from e2e.sandbox.cluster import Sandbox, SandboxError, SandboxState, find_binaries

__all__ = ["Sandbox", "SandboxError", "SandboxState", "find_binaries"]
