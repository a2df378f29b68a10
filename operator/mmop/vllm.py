"""The vLLM release mmop pins, and the parts of its interface mmop uses.

Every name here is vLLM 0.32.0's, read in that release's source: ``vllm/engine/arg_utils.py``
and ``vllm/config/`` for the engine's flags, ``vllm/entrypoints/launchers/cli_args.py`` for the
server's, ``vllm/envs.py`` for the environment. A new pin re-reads them;
``tests/engine/test_argv_drift.py`` and ``tests/engine/test_vllm_acceptance.py`` run the
rendered argv through that release's own parser and configuration code.

This module imports nothing of mmop: everything else may import it.
"""

from __future__ import annotations

from typing import Final

PINNED_VLLM_VERSION: Final = "0.32.0"
"""The vLLM release mmop pins: estimator defaults, flag names and the serving image follow it."""

DEFAULT_VLLM_IMAGE: Final = f"vllm/vllm-openai:v{PINNED_VLLM_VERSION}"
"""The serving image of the pinned release (vLLM's own, ENTRYPOINT ``vllm serve``)."""

SERVE_COMMAND: Final = ("vllm", "serve")
"""vLLM 0.32.0's CLI entry point for the OpenAI-compatible server; the model is its positional
argument."""

OPENAI_PORT: Final = 8000
"""vLLM 0.32.0's default ``--port`` of the OpenAI-compatible server."""

HEALTH_PATH: Final = "/health"
"""vLLM 0.32.0's health endpoint (vllm/entrypoints/serve/instrumentator/health.py); outside the
API key's guarded prefixes ``/v1``, ``/v2``, ``/inference``, ``/cohere``
(vllm/entrypoints/serve/middleware/authenticate.py), so probes need no key."""

METRICS_PATH: Final = "/metrics"
"""vLLM 0.32.0's Prometheus endpoint; also outside the API key's guarded prefixes."""

DEFAULT_MM_PROCESSOR_CACHE_GB: Final = 4
"""vLLM 0.32.0's default ``--mm-processor-cache-gb`` (host RAM cache of processed media)."""

# vLLM 0.32.0's `vllm serve` flags that mmop renders, in the order mmop renders them.
FLAG_SERVED_MODEL_NAME: Final = "--served-model-name"
FLAG_PORT: Final = "--port"
FLAG_TENSOR_PARALLEL_SIZE: Final = "--tensor-parallel-size"
FLAG_PIPELINE_PARALLEL_SIZE: Final = "--pipeline-parallel-size"
FLAG_MAX_MODEL_LEN: Final = "--max-model-len"
FLAG_MAX_NUM_SEQS: Final = "--max-num-seqs"
FLAG_MAX_NUM_BATCHED_TOKENS: Final = "--max-num-batched-tokens"
FLAG_GPU_MEMORY_UTILIZATION: Final = "--gpu-memory-utilization"
FLAG_QUANTIZATION: Final = "--quantization"
FLAG_KV_CACHE_DTYPE: Final = "--kv-cache-dtype"
FLAG_LIMIT_MM_PER_PROMPT: Final = "--limit-mm-per-prompt"
FLAG_MM_PROCESSOR_KWARGS: Final = "--mm-processor-kwargs"
FLAG_MM_PROCESSOR_CACHE_GB: Final = "--mm-processor-cache-gb"
FLAG_REVISION: Final = "--revision"
FLAG_TRUST_REMOTE_CODE: Final = "--trust-remote-code"

# vLLM 0.32.0's flags for one engine over several nodes with its multiprocessing executor
# (engine/arg_utils.py l. 1135-1146; config/parallel.py l. 313-323: "for multi-node distributed
# inference when distributed_executor_backend is mp"). With --nnodes > 1 on CUDA the backend
# defaults to mp (config/parallel.py l. 1045); --nnodes must divide TP × PP (arg_utils.py
# l. 2358-2372) and --node-rank lie in [0, nnodes) (l. 2373-2378). The node of rank 0 runs the
# API server, the engine core and its local workers (v1/executor/multiproc_executor.py l. 148);
# the others run with --headless: no API server, only the workers, which join
# --master-addr:--master-port (entrypoints/cli/serve.py l. 69-76, 219-233). Global ranks are
# local_world_size × node rank + local rank (multiproc_executor.py l. 178-191), so with TP =
# the GPUs of a node, node r holds pipeline stage r.
FLAG_DISTRIBUTED_EXECUTOR_BACKEND: Final = "--distributed-executor-backend"
FLAG_NNODES: Final = "--nnodes"
FLAG_NODE_RANK: Final = "--node-rank"
FLAG_MASTER_ADDR: Final = "--master-addr"
FLAG_MASTER_PORT: Final = "--master-port"
FLAG_HEADLESS: Final = "--headless"
EXECUTOR_BACKEND_MP: Final = "mp"
"""vLLM's multiprocessing executor backend (no Ray cluster needed)."""
DEFAULT_MASTER_PORT: Final = 29501
"""vLLM 0.32.0's default ``--master-port`` (config/parallel.py l. 316)."""

KV_CACHE_DTYPE_AUTO: Final = "auto"
"""vLLM 0.32.0's default ``--kv-cache-dtype`` (the model's dtype): not rendered."""

# vLLM 0.32.0's environment variables (vllm/envs.py) that mmop sets on the engine container.
ENV_API_KEY: Final = "VLLM_API_KEY"
"""The OpenAI server's API key when ``--api-key`` is not given (envs.py ``VLLM_API_KEY``, read by
vllm/entrypoints/serve/middleware/register.py)."""
ENV_CACHE_ROOT: Final = "VLLM_CACHE_ROOT"
"""vLLM's cache root (envs.py; default ``$XDG_CACHE_HOME/vllm``, else ``~/.cache/vllm``):
torch.compile artefacts, the Inductor and Triton caches it sets up, media assets."""
ENV_CONFIG_ROOT: Final = "VLLM_CONFIG_ROOT"
"""vLLM's configuration root (envs.py; default ``$XDG_CONFIG_HOME/vllm``, else
``~/.config/vllm``)."""
ENV_NO_USAGE_STATS: Final = "VLLM_NO_USAGE_STATS"
"""``1``: vLLM sends no usage statistics (envs.py)."""
