#!/usr/bin/env bash
# End-to-end on kind: create the cluster, load the operator image, fake one GPU node, install the
# chart, run e2e/kind/test_kind.py against it. Needs Docker, kind, kubectl and helm.
#
#   make e2e-kind                         # builds the image first
#   OPERATOR_IMAGE=mmop-operator:0.1.0 bash e2e/kind/run.sh
#   KEEP=1 make e2e-kind                  # keep the cluster afterwards (make kind-down deletes it)
set -euo pipefail
cd "$(dirname "$0")/../.."

KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
CLUSTER=${KIND_CLUSTER:-mmop-e2e}
IMAGE=${OPERATOR_IMAGE:?set OPERATOR_IMAGE (make e2e-kind builds it)}
NAMESPACE=${NAMESPACE:-mmop-system}
RELEASE=${RELEASE:-mmop}

for tool in docker "$KIND" "$KUBECTL" "$HELM"; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is not installed" >&2; exit 2; }
done

if ! "$KIND" get clusters | grep -qx "$CLUSTER"; then
  "$KIND" create cluster --name "$CLUSTER" --config e2e/kind/cluster.yaml --wait 120s
fi
KUBECONFIG_FILE=$(mktemp)
trap 'rm -f "$KUBECONFIG_FILE"; if [ -z "${KEEP:-}" ]; then "$KIND" delete cluster --name "$CLUSTER"; fi' EXIT
"$KIND" get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"
export KUBECONFIG=$KUBECONFIG_FILE

"$KIND" load docker-image "$IMAGE" --name "$CLUSTER"

# One worker becomes an "L4 node": GPU-feature-discovery's product label and one nvidia.com/gpu
# advertised in the node status (Kubernetes' documented way to advertise an extended resource).
GPU_NODE=$("$KUBECTL" get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[0].metadata.name}')
"$KUBECTL" label node "$GPU_NODE" --overwrite nvidia.com/gpu.product=NVIDIA-L4 nvidia.com/gpu.count=1
"$KUBECTL" patch node "$GPU_NODE" --subresource=status --type=json \
  -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"1"}]'

"$HELM" upgrade --install "$RELEASE" charts/mmop -n "$NAMESPACE" --create-namespace \
  -f e2e/kind/values.yaml --set image.tag="${IMAGE##*:}" --set image.repository="${IMAGE%:*}" \
  --wait --timeout 180s

MMOP_E2E_NAMESPACE=$NAMESPACE MMOP_E2E_RELEASE=$RELEASE MMOP_E2E_KUBECTL=$KUBECTL \
  python -m pytest -q -p no:cacheprovider e2e/kind/test_kind.py
