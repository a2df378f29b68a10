"""The operator shell: kopf handlers (glue only) and the Kubernetes I/O they use."""
