#!/usr/bin/env bash
# Builds the binaries of the local Kubernetes sandbox (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, helm, llm-d-inference-sim; and, under a cache key of its own,
# the LeaderWorkerSet controller with its CRDs and webhook manifests) from published Go modules,
# into a versioned cache outside the repository, and prints the directory that holds them.
#
#   bash e2e/sandbox/build.sh                 build what is missing, print the bin dir
#   bash e2e/sandbox/build.sh --print-dir     print the bin dir, build nothing
#   bash e2e/sandbox/build.sh --print-env     build what is missing, print NAME=path for every binary
#                                             (and MMOP_LWS_DIR=<dir> for the LWS controller)
#   bash e2e/sandbox/build.sh --lws           build the LWS controller if missing, print its dir
#   bash e2e/sandbox/build.sh --print-lws-dir print the LWS controller's dir, build nothing
#   bash e2e/sandbox/build.sh --sync [WRAPPER]  regenerate gomod/*/go.mod and go.sum (or only
#                                             gomod/WRAPPER's) from versions.env
#
# Versions live in versions.env only; e2e/sandbox/BUILD.md explains the rest (cache, overrides).
set -euo pipefail

SANDBOX_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SANDBOX_DIR
readonly VERSIONS_FILE="$SANDBOX_DIR/versions.env"
readonly GOMOD_DIR="$SANDBOX_DIR/gomod"
# Bump when the way the binaries are built changes (flags, tags, stamping): it is part of the cache
# key, so caches built the old way are not reused.
readonly RECIPE_REVISION=4
readonly WRAPPER_MODULE_PREFIX="mmop.dev/e2e/sandbox/gomod"

readonly BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm
  llm-d-inference-sim)
readonly WRAPPERS=(kubernetes etcd kwok helm llm-d-inference-sim)

# The LeaderWorkerSet controller is optional (Sandbox(lws=True)) and lives under a cache key of
# its own, so adding or moving it never invalidates the key of the binaries above. Its lines in
# versions.env come after OPTIONAL_MARKER, which the main key does not read.
readonly LWS_WRAPPER=lws
readonly LWS_BINARY=lws-controller
readonly LWS_PACKAGE=sigs.k8s.io/lws/cmd
# Bump when the way the LWS controller is built or its manifests are picked changes.
readonly LWS_RECIPE_REVISION=1
# Copied from the module (verified against go.sum) into <lws dir>/share/lws/.
readonly LWS_MANIFESTS=(
  config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml
  config/crd/bases/disaggregatedset.x-k8s.io_disaggregatedsets.yaml
  config/webhook/manifests.yaml
  config/webhook/mutating-patch.yaml
  config/webhook/validating-patch.yaml
)
readonly OPTIONAL_MARKER="# ==== optional components"

# Cache layout: $CACHE_ROOT/<key>/{bin,logs,.complete}; module and build caches beside the keys.
readonly CACHE_ROOT="${MMOP_SANDBOX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mmop/sandbox}"

note() { printf 'mmop sandbox: %s\n' "$*" >&2; }

usage_error() {
  printf 'mmop sandbox: %s\n' "$*" >&2
  printf 'usage: %s [--print-dir | --print-env | --lws | --print-lws-dir | --sync [WRAPPER] | --help]\n' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# A step failed: show the end of its log, then one line naming the step and the log.
step_failed() {
  local step=$1 log=$2 reason=${3:-}
  if [[ -s $log ]]; then
    printf 'mmop sandbox: last lines of %s:\n' "$log" >&2
    tail -n 15 "$log" | sed 's/^/  | /' >&2
  fi
  if [[ -z $reason ]] && grep -qiE 'dial tcp|lookup disabled|Get "http|no such host|connection refused|i/o timeout|TLS handshake|proxyconnect|network is unreachable|403 Forbidden|404 Not Found|410 Gone|not available|verifying .*: .*(missing|mismatch)' "$log" 2>/dev/null; then
    reason="the Go module proxy (GOPROXY=${GOPROXY_IN_USE:-?}) could not be reached or refused a module"
  fi
  printf 'mmop sandbox: step "%s" failed%s; log: %s\n' "$step" "${reason:+: $reason}" "$log" >&2
  exit 1
}

# Fails without a log file: only for mistakes in our own inputs (versions.env, wrappers).
input_error() {
  printf 'mmop sandbox: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# versions.env

KUBERNETES_VERSION="" KUBERNETES_GIT_COMMIT="" ETCD_VERSION="" KWOK_VERSION="" HELM_VERSION=""
LLM_D_INFERENCE_SIM_VERSION="" KUBERNETES_STAGING_VERSION="" LWS_VERSION=""

load_versions() {
  [[ -f $VERSIONS_FILE ]] || input_error "versions file not found: $VERSIONS_FILE"
  local line key value n=0
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    [[ $line =~ ^([A-Z][A-Z0-9_]*)=([A-Za-z0-9._+-]*)$ ]] ||
      input_error "$VERSIONS_FILE:$n: expected KEY=value, got: $line"
    key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
    case $key in
      KUBERNETES_VERSION | KUBERNETES_GIT_COMMIT | ETCD_VERSION | KWOK_VERSION | HELM_VERSION | \
        LLM_D_INFERENCE_SIM_VERSION | LWS_VERSION) printf -v "$key" '%s' "$value" ;;
      *) input_error "$VERSIONS_FILE:$n: unknown key $key" ;;
    esac
  done <"$VERSIONS_FILE"
  for key in KUBERNETES_VERSION ETCD_VERSION KWOK_VERSION HELM_VERSION LLM_D_INFERENCE_SIM_VERSION \
    LWS_VERSION; do
    [[ ${!key} =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] ||
      input_error "$VERSIONS_FILE: $key must be a module version like v1.2.3, got '${!key}'"
  done
  [[ $KUBERNETES_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] ||
    input_error "$VERSIONS_FILE: KUBERNETES_VERSION must be a v1.minor.patch release, got '$KUBERNETES_VERSION'"
  # k8s.io/kubernetes v1.M.P goes with the staging modules (k8s.io/api, ...) at v0.M.P.
  KUBERNETES_STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
  [[ -z $KUBERNETES_GIT_COMMIT || $KUBERNETES_GIT_COMMIT =~ ^[0-9a-f]{40}$ ]] ||
    input_error "$VERSIONS_FILE: KUBERNETES_GIT_COMMIT must be empty or a 40-hex commit"
}

# ---------------------------------------------------------------------------------------------
# What is built from where

wrapper_of() {
  case $1 in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo kubernetes ;;
    etcd | kwok | helm | llm-d-inference-sim) echo "$1" ;;
    *) return 1 ;;
  esac
}

package_of() {
  case $1 in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo "k8s.io/kubernetes/cmd/$1" ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
    helm) echo helm.sh/helm/v4/cmd/helm ;;
    llm-d-inference-sim) echo github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim ;;
    *) return 1 ;;
  esac
}

upstream_module_of() {
  case $1 in
    kubernetes) echo k8s.io/kubernetes ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kwok) echo sigs.k8s.io/kwok ;;
    helm) echo helm.sh/helm/v4 ;;
    llm-d-inference-sim) echo github.com/llm-d/llm-d-inference-sim ;;
    lws) echo sigs.k8s.io/lws ;;
    *) return 1 ;;
  esac
}

upstream_version_of() {
  case $1 in
    kubernetes) echo "$KUBERNETES_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    llm-d-inference-sim) echo "$LLM_D_INFERENCE_SIM_VERSION" ;;
    lws) echo "$LWS_VERSION" ;;
    *) return 1 ;;
  esac
}

# MMOP_<NAME>: kube-apiserver -> MMOP_KUBE_APISERVER
override_var_of() {
  local name=${1//-/_}
  echo "MMOP_${name^^}"
}

# ---------------------------------------------------------------------------------------------
# Cache key and directories

# versions.env as the main key reads it: the lines before OPTIONAL_MARKER, without the blank
# lines that lead up to it (so appending an optional component leaves the main key as it was).
core_versions() {
  awk -v m="$OPTIONAL_MARKER" '
    index($0, m) == 1 { exit }
    /^[[:space:]]*$/ { blank = blank $0 "\n"; next }
    { printf "%s", blank; blank = ""; print }' "$VERSIONS_FILE"
}

# The optional components' part of versions.env (from OPTIONAL_MARKER on).
optional_versions() {
  awk -v m="$OPTIONAL_MARKER" 'index($0, m) == 1 { on = 1 } on' "$VERSIONS_FILE"
}

cache_key() {
  local f
  {
    echo "recipe $RECIPE_REVISION"
    echo "platform $(uname -s)/$(uname -m)"
    for f in "$VERSIONS_FILE" "$GOMOD_DIR"/*/go.mod "$GOMOD_DIR"/*/go.sum; do
      [[ -f $f ]] || continue
      # Optional components are keyed on their own (lws_cache_key).
      [[ $f == "$GOMOD_DIR/$LWS_WRAPPER/"* ]] && continue
      echo "== ${f#"$SANDBOX_DIR"/}"
      if [[ $f == "$VERSIONS_FILE" ]]; then
        core_versions
      else
        cat "$f"
      fi
    done
  } | sha256sum | cut -c1-16
}

lws_cache_key() {
  local f
  {
    echo "lws recipe $LWS_RECIPE_REVISION"
    echo "platform $(uname -s)/$(uname -m)"
    echo "== versions.env (optional part)"
    optional_versions
    for f in "$GOMOD_DIR/$LWS_WRAPPER/go.mod" "$GOMOD_DIR/$LWS_WRAPPER/go.sum"; do
      [[ -f $f ]] || continue
      echo "== ${f#"$SANDBOX_DIR"/}"
      cat "$f"
    done
    echo "== manifests"
    printf '%s\n' "${LWS_MANIFESTS[@]}"
  } | sha256sum | cut -c1-16
}

KEY_DIR="" BIN_DIR="" LOG_DIR="" MARKER=""
set_cache_dirs() {
  KEY_DIR="$CACHE_ROOT/$(cache_key)"
  BIN_DIR="$KEY_DIR/bin"
  LOG_DIR="$KEY_DIR/logs"
  MARKER="$KEY_DIR/.complete"
}

# The LWS controller's directory: MMOP_LWS_DIR when set, else $CACHE_ROOT/lws-<key>
# (bin/lws-controller, share/lws/*.yaml, logs/, .complete).
LWS_DIR="" LWS_LOG_DIR="" LWS_MARKER=""
set_lws_dirs() {
  if [[ -n ${MMOP_LWS_DIR:-} ]]; then
    LWS_DIR=$( (cd "$MMOP_LWS_DIR" 2>/dev/null && pwd) || echo "$MMOP_LWS_DIR")
  else
    LWS_DIR="$CACHE_ROOT/lws-$(lws_cache_key)"
  fi
  LWS_LOG_DIR="$LWS_DIR/logs"
  LWS_MARKER="$LWS_DIR/.complete"
}

# The directory `build.sh` prints: MMOP_SANDBOX_BIN_DIR when set, else the cache's bin dir.
reported_bin_dir() {
  if [[ -n ${MMOP_SANDBOX_BIN_DIR:-} ]]; then
    (cd "$MMOP_SANDBOX_BIN_DIR" 2>/dev/null && pwd) || echo "$MMOP_SANDBOX_BIN_DIR"
  else
    echo "$BIN_DIR"
  fi
}

# ---------------------------------------------------------------------------------------------
# Go environment

GO_VERSION="" GOPROXY_IN_USE=""
setup_go_env() {
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
  # Explicit GOMODCACHE / GOCACHE win; otherwise dedicated caches next to the binaries, so the
  # whole sandbox build lives (and can be deleted) under one directory.
  export GOMODCACHE="${GOMODCACHE:-$CACHE_ROOT/gomodcache}"
  export GOCACHE="${GOCACHE:-$CACHE_ROOT/gocache}"
}

# Step "check Go toolchain": go on PATH, and not older than the go directive of any wrapper
# named after LOG (all the main wrappers when none is named).
check_go() {
  local log=$1 w need
  shift
  local wrappers=("$@")
  ((${#wrappers[@]} > 0)) || wrappers=("${WRAPPERS[@]}")
  mkdir -p "$(dirname "$log")"
  {
    echo "# step: check Go toolchain"
    echo "# PATH=$PATH"
  } >"$log"
  if ! command -v go >/dev/null 2>&1; then
    echo "go: command not found" >>"$log"
    step_failed "check Go toolchain" "$log" \
      "no 'go' command on PATH; install Go (see the go directives in $GOMOD_DIR/*/go.mod) or skip the build with MMOP_SANDBOX_BIN_DIR=<dir with prebuilt binaries>"
  fi
  if ! GO_VERSION=$(go env GOVERSION 2>>"$log"); then
    step_failed "check Go toolchain" "$log" "'go env GOVERSION' failed"
  fi
  GOPROXY_IN_USE=$(go env GOPROXY 2>/dev/null || true)
  {
    echo "go: $(command -v go) $GO_VERSION"
    go env GOOS GOARCH GOPROXY GOMODCACHE GOCACHE GOFLAGS
  } >>"$log" 2>&1
  for w in "${wrappers[@]}"; do
    [[ -f $GOMOD_DIR/$w/go.mod ]] || continue
    need=$(awk '$1 == "go" { print $2; exit }' "$GOMOD_DIR/$w/go.mod")
    if ! version_at_least "${GO_VERSION#go}" "$need"; then
      echo "gomod/$w/go.mod needs go $need, local toolchain is $GO_VERSION" >>"$log"
      step_failed "check Go toolchain" "$log" \
        "local Go is $GO_VERSION but gomod/$w/go.mod needs go $need (GOTOOLCHAIN=local: no toolchain download)"
    fi
  done
}

# version_at_least HAVE NEED: true when HAVE >= NEED (dotted versions).
version_at_least() {
  [[ -z $2 ]] && return 0
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]
}

# ---------------------------------------------------------------------------------------------
# Steps with logs

# run_step STEP LOG DIR CMD...: run CMD in DIR, output to LOG; on failure report the step and LOG.
run_step() {
  local step=$1 log=$2 dir=$3 start=$SECONDS
  shift 3
  mkdir -p "$(dirname "$log")"
  {
    echo "# step: $step"
    echo "# dir: $dir"
    printf '# command:'
    printf ' %q' "$@"
    echo
    echo "# started: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$log"
  if ! (cd "$dir" && "$@") >>"$log" 2>&1; then
    step_failed "$step" "$log"
  fi
  echo "# finished in $((SECONDS - start))s" >>"$log"
  note "$step: done in $((SECONDS - start))s"
}

# ---------------------------------------------------------------------------------------------
# Wrapper modules

# The wrappers must pin exactly what versions.env says (no network needed to check).
check_wrapper() {
  local w=$1 mod ver gomod
  gomod="$GOMOD_DIR/$w/go.mod"
  [[ -f $gomod && -f $GOMOD_DIR/$w/go.sum ]] ||
    input_error "missing $GOMOD_DIR/$w/go.mod or go.sum; run: bash e2e/sandbox/build.sh --sync $w"
  mod=$(upstream_module_of "$w")
  ver=$(upstream_version_of "$w")
  awk -v m="$mod" -v v="$ver" '
    $1 == "require" && $2 == m && $3 == v { found = 1 }
    $1 == m && $2 == v { found = 1 }
    END { exit !found }' "$gomod" ||
    input_error "$gomod does not require $mod $ver as $VERSIONS_FILE says; run: bash e2e/sandbox/build.sh --sync $w"
}

check_wrappers() {
  local w gomod bad
  for w in "${WRAPPERS[@]}"; do
    check_wrapper "$w"
  done
  gomod="$GOMOD_DIR/kubernetes/go.mod"
  bad=$(awk -v v="$KUBERNETES_STAGING_VERSION" '
    /=>/ { n++; if ($NF != v) print $0 }
    END { if (!n) print "no replace directives" }' "$gomod")
  [[ -z $bad ]] ||
    input_error "$gomod: k8s.io staging replacements are not all $KUBERNETES_STAGING_VERSION ($bad); run: bash e2e/sandbox/build.sh --sync"
}

# Regenerate gomod/<wrapper>/go.mod and go.sum from versions.env (needs the module proxy).
sync_wrapper() {
  local w=$1 log_dir=$2 mod ver tmp upstream_mod godir tools=() line staging=()
  mod=$(upstream_module_of "$w")
  ver=$(upstream_version_of "$w")
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/mmop-sandbox-sync.XXXXXX")

  # shellcheck disable=SC2016 # $1 is expanded by sh
  run_step "download $mod@$ver (sync $w)" "$log_dir/sync-$w-download.log" "$tmp" \
    sh -c 'go mod download -json "$1" > upstream.json' _ "$mod@$ver"
  upstream_mod=$(sed -n 's/^[[:space:]]*"GoMod": *"\(.*\)",\{0,1\}$/\1/p' "$tmp/upstream.json")
  [[ -f $upstream_mod ]] || step_failed "download $mod@$ver (sync $w)" "$log_dir/sync-$w-download.log" \
    "no go.mod of $mod@$ver in the module cache"
  godir=$(awk '$1 == "go" { print $2; exit }' "$upstream_mod")

  local godebug=() replaces=()
  # Keep the upstream's GODEBUG defaults (single-line godebug directives).
  mapfile -t godebug < <(awk '$1 == "godebug" && NF == 2 { print $2 }' "$upstream_mod")
  case $w in
    kubernetes)
      tools=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
      # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
      # ./staging/... in its own repo; a dependent module must replace them with real tags.
      mapfile -t staging < <(awk '
        $1 == "require" && $2 ~ /^k8s\.io\// && $3 == "v0.0.0" { print $2 }
        $1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$upstream_mod")
      ((${#staging[@]} > 0)) || input_error "found no v0.0.0 k8s.io requirements in $upstream_mod"
      for line in "${staging[@]}"; do
        replaces+=("$line => $line $KUBERNETES_STAGING_VERSION")
      done
      ;;
    lws) tools=("$LWS_PACKAGE") ;;
    *) tools=("$(package_of "$w")") ;;
  esac
  {
    echo "// Wrapper module: builds $mod at the version pinned in e2e/sandbox/versions.env."
    echo "// Generated by 'bash e2e/sandbox/build.sh --sync'; edit versions.env, not this file."
    echo
    echo "module $WRAPPER_MODULE_PREFIX/$w"
    echo
    echo "go $godir"
    for line in "${godebug[@]}"; do
      printf '\ngodebug %s\n' "$line"
    done
    printf '\nrequire %s %s\n' "$mod" "$ver"
    if ((${#replaces[@]} > 0)); then
      printf '\nreplace (\n'
      printf '\t%s\n' "${replaces[@]}"
      printf ')\n'
    fi
    printf '\ntool (\n'
    printf '\t%s\n' "${tools[@]}"
    printf ')\n'
  } >"$tmp/go.mod"
  run_step "go mod tidy (sync $w)" "$log_dir/sync-$w-tidy.log" "$tmp" \
    sh -c 'go mod tidy && go mod edit -toolchain=none && go mod verify'
  godir=$(awk '$1 == "go" { print $2; exit }' "$tmp/go.mod")
  version_at_least "${GO_VERSION#go}" "$godir" ||
    input_error "gomod/$w: tidy raised the go directive to $godir, newer than the local $GO_VERSION"
  mkdir -p "$GOMOD_DIR/$w"
  cp "$tmp/go.mod" "$tmp/go.sum" "$GOMOD_DIR/$w/"
  rm -rf "$tmp"
  note "wrote $GOMOD_DIR/$w/go.mod and go.sum ($mod $ver, go $godir)"
}

# do_sync [WRAPPER]: every wrapper, or only the one named.
do_sync() {
  local only=${1:-} w todo=()
  if [[ -n $only ]]; then
    upstream_module_of "$only" >/dev/null || input_error "--sync: unknown wrapper '$only'"
    todo=("$only")
  else
    todo=("${WRAPPERS[@]}" "$LWS_WRAPPER")
  fi
  setup_go_env
  local log_dir="$CACHE_ROOT/logs"
  check_go "$log_dir/sync-toolchain.log" "${todo[@]}"
  for w in "${todo[@]}"; do
    sync_wrapper "$w" "$log_dir"
  done
  check_wrappers
  check_wrapper "$LWS_WRAPPER"
  set_cache_dirs
  set_lws_dirs
  note "wrappers match $VERSIONS_FILE; cache keys are now $(basename "$KEY_DIR") and $(basename "$LWS_DIR")"
}

# ---------------------------------------------------------------------------------------------
# Building

# module_info_field WRAPPER FIELD: Time or Origin Hash of the upstream module, from the proxy's
# .info record in the module cache (empty when the proxy did not record it).
module_info_field() {
  local w=$1 field=$2 mod ver json info
  mod=$(upstream_module_of "$w")
  ver=$(upstream_version_of "$w")
  json=$(cd "$GOMOD_DIR/$w" && go mod download -json "$mod@$ver" 2>/dev/null) || return 0
  info=$(sed -n 's/^[[:space:]]*"Info": *"\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  [[ -f $info ]] || return 0
  case $field in
    Time) sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' "$info" ;;
    Hash) sed -n 's/.*"Hash": *"\([0-9a-f]\{40\}\)".*/\1/p' "$info" ;;
  esac
}

LDFLAGS_KUBERNETES=""
kubernetes_ldflags() {
  if [[ -z $LDFLAGS_KUBERNETES ]]; then
    local time build_date commit minor flags=() key value pkg
    time=$(module_info_field kubernetes Time)
    build_date=$(date -u -d "$time" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo "$time")
    commit=${KUBERNETES_GIT_COMMIT:-$(module_info_field kubernetes Hash)}
    minor=${KUBERNETES_VERSION#v1.}
    minor=${minor%%.*}
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      for key in gitVersion gitMajor gitMinor gitCommit gitTreeState buildDate; do
        case $key in
          gitVersion) value=$KUBERNETES_VERSION ;;
          gitMajor) value=1 ;;
          gitMinor) value=$minor ;;
          gitCommit) value=$commit ;;
          # The sources are the released module, verified against go.sum: nothing modified.
          gitTreeState) value=clean ;;
          buildDate) value=$build_date ;;
        esac
        # gitCommit is stamped even when unknown: empty beats the "$Format:%H$" placeholder.
        [[ -n $value || $key == gitCommit ]] && flags+=("-X $pkg.$key=$value")
      done
    done
    LDFLAGS_KUBERNETES="${flags[*]}"
  fi
  echo "$LDFLAGS_KUBERNETES"
}

ldflags_of() {
  local commit
  # -s -w: no symbol table or DWARF, as the upstream release builds.
  case $1 in
    kube-*) echo "-s -w $(kubernetes_ldflags)" ;;
    kubectl) echo "-s -w $(kubernetes_ldflags)" ;;
    etcd)
      commit=$(module_info_field etcd Hash)
      echo "-s -w${commit:+ -X go.etcd.io/etcd/api/v3/version.GitSHA=${commit:0:7}}"
      ;;
    kwok) echo "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" ;;
    helm)
      commit=$(module_info_field helm Hash)
      echo "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.metadata= -X helm.sh/helm/v4/internal/version.gitTreeState=clean${commit:+ -X helm.sh/helm/v4/internal/version.gitCommit=$commit}"
      ;;
    llm-d-inference-sim) echo "-s -w" ;;
  esac
}

tags_of() {
  case $1 in
    # The tags Kubernetes release binaries are built with.
    kube-* | kubectl) echo "selinux,notest,grpcnotrace" ;;
    *) echo "" ;;
  esac
}

# check_binary NAME PATH: run the binary's version command; it must report the pinned version.
check_binary() {
  local name=$1 path=$2 want
  case $name in
    kube-apiserver | kube-controller-manager | kube-scheduler)
      want="Kubernetes $KUBERNETES_VERSION"
      "$path" --version
      ;;
    kubectl)
      want="Client Version: $KUBERNETES_VERSION"
      "$path" version --client
      ;;
    etcd)
      want="etcd Version: ${ETCD_VERSION#v}"
      "$path" --version
      ;;
    kwok)
      want="${KWOK_VERSION}"
      "$path" --version
      ;;
    helm)
      want="Version:\"$HELM_VERSION\""
      "$path" version
      ;;
    llm-d-inference-sim)
      want="force-dummy-tokenizer"
      "$path" --help 2>&1 || true
      ;;
  esac >"$path.check" 2>&1
  cat "$path.check"
  if ! grep -qF -- "$want" "$path.check"; then
    echo "expected the output to contain: $want"
    rm -f "$path.check"
    return 1
  fi
  rm -f "$path.check"
}

# Two departures of llm-d-inference-sim (v0.10.2) from vLLM are corrected in a copy of the module
# (verified against go.sum by `go mod download`), built through a copy of the wrapper that replaces
# the module with it. Each patch rewrites one line; the build fails if a line is not found exactly
# once, so a new release of the module cannot be patched silently.
#
# 1. TTFT from arrival. The simulator observes vllm:time_to_first_token_seconds after its queue:
#    simulateTTFT (pkg/llm-d-inference-sim/context.go) reports only the simulated prefill delay,
#    while vLLM counts TTFT from the request's arrival (vllm/v1/metrics/stats.py, l. 521 at 0.32.0:
#    time since req_stats.arrival_time). The patched build reports the time since the request
#    context was created (startProcessing, set as the HTTP request is read: request.go,
#    newBaseRequestContext).
readonly SIM_TTFT_FILE=pkg/llm-d-inference-sim/context.go
readonly SIM_TTFT_LINE='common.WriteToChannel(s.metrics.ttftChan, ttft.Seconds(), s.logger)'
readonly SIM_TTFT_FROM_ARRIVAL='common.WriteToChannel(s.metrics.ttftChan, time.Since(respCtx.RequestContext().startProcessingTime()).Seconds(), s.logger)'
# 2. A full KV cache waits instead of failing. The simulator answers HTTP 500 when a request's
#    prompt blocks do not fit its KV cache (request.go, kvCacheOnRequestStart; the error comes
#    from kv-cache/block_cache.go, startRequest), while vLLM's scheduler leaves such a request
#    waiting until blocks free (vllm/v1/core/sched/scheduler.py at 0.32.0: allocate_slots returns
#    None, l. 1275, and the waiting request is not scheduled). The patched build retries the allocation
#    every 5 ms until it fits; after 120 s (a request larger than the whole cache) it fails as
#    before. The retry happens in the request's worker, so the request counts as running, not
#    waiting, while it waits (docs/autoscaling.md lists this departure).
readonly SIM_KV_FILE=pkg/llm-d-inference-sim/request.go
readonly SIM_KV_LINE='stat, err = reqCtx.sim.kvcacheHelper.OnRequestStart(reqCtx.request())'
readonly SIM_KV_CAPACITY_FILE=pkg/kv-cache/block_cache.go
readonly SIM_KV_CAPACITY_ERROR='the kv cache does not have sufficient capacity to store this request'
readonly SIM_KV_WAIT='for kvWaitUntil := time.Now().Add(120 * time.Second); ; time.Sleep(5 * time.Millisecond) { stat, err = reqCtx.sim.kvcacheHelper.OnRequestStart(reqCtx.request()); if err == nil || err.Error() != "'"$SIM_KV_CAPACITY_ERROR"'" || time.Now().After(kvWaitUntil) { break } }'
readonly SIM_MODULE=github.com/llm-d/llm-d-inference-sim

# patch_line FILE FROM TO: replace the one line of FILE that contains FROM (FROM replaced by TO).
patch_line() {
  local src=$1 from=$2 to=$3
  if [[ $(grep -cF -- "$from" "$src") != 1 ]]; then
    echo "expected exactly one line '$from' in $src"
    return 1
  fi
  awk -v from="$from" -v to="$to" '{
    i = index($0, from)
    if (i) { $0 = substr($0, 1, i - 1) to substr($0, i + length(from)) }
    print
  }' "$src" >"$src.new"
  mv -f "$src.new" "$src"
  [[ $(grep -cF -- "$to" "$src") == 1 ]] || return 1
  echo "patched $src"
}

# sim_patched_wrapper DIR (run in the wrapper): DIR/module, the patched copy of the module, and
# DIR/wrapper, the wrapper with `replace SIM_MODULE => DIR/module`.
sim_patched_wrapper() {
  local dir=$1 module
  module=$(go list -mod=readonly -m -f '{{.Dir}}' "$SIM_MODULE") || return 1
  rm -rf "$dir"
  mkdir -p "$dir/wrapper"
  cp -R "$module" "$dir/module"
  chmod -R u+w "$dir/module"
  patch_line "$dir/module/$SIM_TTFT_FILE" "$SIM_TTFT_LINE" "$SIM_TTFT_FROM_ARRIVAL" || return 1
  if [[ $(grep -cF -- "\"$SIM_KV_CAPACITY_ERROR\"" "$dir/module/$SIM_KV_CAPACITY_FILE") != 1 ]]; then
    echo "expected the capacity error '$SIM_KV_CAPACITY_ERROR' in $SIM_KV_CAPACITY_FILE"
    return 1
  fi
  patch_line "$dir/module/$SIM_KV_FILE" "$SIM_KV_LINE" "$SIM_KV_WAIT" || return 1
  cp go.mod go.sum "$dir/wrapper/"
  (cd "$dir/wrapper" && go mod edit -replace="$SIM_MODULE=$dir/module")
}

build_binary() {
  local name=$1 w pkg partial
  w=$(wrapper_of "$name")
  pkg=$(package_of "$name")
  partial="$BIN_DIR/.$name.partial"
  rm -f "$partial"
  local dir="$GOMOD_DIR/$w"
  if [[ $name == llm-d-inference-sim ]]; then
    run_step "patch $name (TTFT from arrival, KV waits)" "$LOG_DIR/patch-$name.log" "$dir" \
      sim_patched_wrapper "$KEY_DIR/sim-build"
    dir="$KEY_DIR/sim-build/wrapper"
  fi
  run_step "build $name" "$LOG_DIR/build-$name.log" "$dir" \
    go build -mod=readonly -buildvcs=false -trimpath -tags="$(tags_of "$name")" \
    -ldflags="$(ldflags_of "$name")" -o "$partial" "$pkg"
  run_step "check $name version" "$LOG_DIR/check-$name.log" "$BIN_DIR" \
    check_binary "$name" "$partial"
  mv -f "$partial" "$BIN_DIR/$name"
}

# The binaries this run must provide from the cache: all but those given by per-binary variables.
needed_from_cache() {
  local name var
  for name in "${BINARIES[@]}"; do
    var=$(override_var_of "$name")
    [[ -n ${!var:-} ]] || echo "$name"
  done
}

check_overrides() {
  local name var path
  for name in "${BINARIES[@]}"; do
    var=$(override_var_of "$name")
    path=${!var:-}
    [[ -z $path ]] && continue
    [[ -f $path && -x $path ]] || input_error "$var=$path is not an executable file"
  done
  if [[ -n ${MMOP_SANDBOX_BIN_DIR:-} ]]; then
    [[ -d $MMOP_SANDBOX_BIN_DIR ]] ||
      input_error "MMOP_SANDBOX_BIN_DIR=$MMOP_SANDBOX_BIN_DIR is not a directory"
    local missing=()
    for name in $(needed_from_cache); do
      [[ -f $MMOP_SANDBOX_BIN_DIR/$name && -x $MMOP_SANDBOX_BIN_DIR/$name ]] || missing+=("$name")
    done
    ((${#missing[@]} == 0)) ||
      input_error "MMOP_SANDBOX_BIN_DIR=$MMOP_SANDBOX_BIN_DIR lacks: ${missing[*]} (give them with $(for name in "${missing[@]}"; do printf '%s ' "$(override_var_of "$name")"; done)or unset MMOP_SANDBOX_BIN_DIR to build everything)"
  fi
}

cache_is_complete() {
  [[ -f $MARKER ]] || return 1
  local name
  for name in "${BINARIES[@]}"; do
    [[ -x $BIN_DIR/$name ]] || return 1
  done
}

ensure_built() {
  check_overrides
  [[ -n ${MMOP_SANDBOX_BIN_DIR:-} ]] && return 0 # nothing to build: the user's dir has them all
  cache_is_complete && return 0

  local todo=() name
  for name in $(needed_from_cache); do
    [[ -x $BIN_DIR/$name ]] || todo+=("$name")
  done
  if ((${#todo[@]} > 0)); then
    mkdir -p "$BIN_DIR" "$LOG_DIR"
    # One build per cache key at a time; a second caller waits, then finds the binaries built.
    if command -v flock >/dev/null 2>&1; then
      exec {lock_fd}>"$KEY_DIR/.lock"
      if ! flock -n "$lock_fd"; then
        note "another build of $KEY_DIR is running; waiting for it"
        flock "$lock_fd"
      fi
    fi
    # What the build we may have waited for left to do.
    local left=()
    for name in "${todo[@]}"; do
      [[ -x $BIN_DIR/$name ]] || left+=("$name")
    done
    todo=("${left[@]}")
  fi
  if ((${#todo[@]} > 0)); then
    setup_go_env
    check_wrappers
    check_go "$LOG_DIR/toolchain.log"
    note "building into $BIN_DIR with $GO_VERSION (GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE)"
    rm -f "$BIN_DIR"/.*.partial "$BIN_DIR"/.*.partial.check
    local w start=$SECONDS
    declare -A wrapper_ready=()
    for name in "${todo[@]}"; do
      w=$(wrapper_of "$name")
      if [[ -z ${wrapper_ready[$w]:-} ]]; then
        run_step "download modules for $w" "$LOG_DIR/download-$w.log" "$GOMOD_DIR/$w" \
          go mod download
        wrapper_ready[$w]=1
      fi
      build_binary "$name"
    done
    note "built ${todo[*]} in $((SECONDS - start))s"
  fi
  # Mark the cache complete only once every binary is in place.
  for name in "${BINARIES[@]}"; do
    [[ -x $BIN_DIR/$name ]] || return 0
  done
  if [[ ! -f $MARKER ]]; then
    {
      echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
      echo "go: ${GO_VERSION:-unknown}"
      echo "platform: $(uname -s)/$(uname -m)"
      echo "recipe: $RECIPE_REVISION"
      sed -n 's/^\([A-Z_]*\)=\(.*\)$/\1: \2/p' "$VERSIONS_FILE"
    } >"$MARKER.$$"
    mv -f "$MARKER.$$" "$MARKER"
  fi
}

# ---------------------------------------------------------------------------------------------
# The LeaderWorkerSet controller (its own cache key: $CACHE_ROOT/lws-<key>)

lws_is_complete() {
  [[ -f $LWS_MARKER && -x $LWS_DIR/bin/$LWS_BINARY ]] || return 1
  local m
  for m in "${LWS_MANIFESTS[@]}"; do
    [[ -f $LWS_DIR/share/lws/$(basename "$m") ]] || return 1
  done
}

# copy_lws_manifests DEST: the manifests, from the module as the module cache holds it (go mod
# download checks it against the wrapper's go.sum first).
copy_lws_manifests() {
  local dest=$1 json dir m
  json=$(go mod download -json "sigs.k8s.io/lws@$LWS_VERSION") || return 1
  printf '%s\n' "$json"
  dir=$(sed -n 's/^[[:space:]]*"Dir": *"\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  [[ -d $dir ]] || {
    echo "no module directory for sigs.k8s.io/lws@$LWS_VERSION"
    return 1
  }
  rm -rf "$dest"
  mkdir -p "$dest"
  for m in "${LWS_MANIFESTS[@]}"; do
    cp "$dir/$m" "$dest/" || return 1
    chmod u+w "$dest/$(basename "$m")"
    echo "copied $m"
  done
}

check_lws_binary() {
  local path=$1
  "$path" --version >"$path.check" 2>&1 || true
  cat "$path.check"
  if ! grep -qF -- "Version: $LWS_VERSION" "$path.check"; then
    echo "expected the output to contain: Version: $LWS_VERSION"
    rm -f "$path.check"
    return 1
  fi
  rm -f "$path.check"
}

ensure_lws_built() {
  if [[ -n ${MMOP_LWS_DIR:-} ]]; then
    [[ -x $LWS_DIR/bin/$LWS_BINARY ]] ||
      input_error "MMOP_LWS_DIR=$MMOP_LWS_DIR lacks bin/$LWS_BINARY"
    local m
    for m in "${LWS_MANIFESTS[@]}"; do
      [[ -f $LWS_DIR/share/lws/$(basename "$m") ]] ||
        input_error "MMOP_LWS_DIR=$MMOP_LWS_DIR lacks share/lws/$(basename "$m")"
    done
    return 0
  fi
  lws_is_complete && return 0
  mkdir -p "$LWS_DIR/bin" "$LWS_LOG_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec {lws_lock_fd}>"$LWS_DIR/.lock"
    if ! flock -n "$lws_lock_fd"; then
      note "another build of $LWS_DIR is running; waiting for it"
      flock "$lws_lock_fd"
    fi
  fi
  lws_is_complete && return 0

  setup_go_env
  check_wrapper "$LWS_WRAPPER"
  check_go "$LWS_LOG_DIR/toolchain.log" "$LWS_WRAPPER"
  note "building the LWS controller into $LWS_DIR with $GO_VERSION"
  local start=$SECONDS partial="$LWS_DIR/bin/.$LWS_BINARY.partial" commit time build_date
  rm -f "$LWS_DIR"/bin/.*.partial "$LWS_DIR"/bin/.*.partial.check
  run_step "download modules for lws" "$LWS_LOG_DIR/download-lws.log" "$GOMOD_DIR/$LWS_WRAPPER" \
    go mod download
  commit=$(module_info_field "$LWS_WRAPPER" Hash)
  time=$(module_info_field "$LWS_WRAPPER" Time)
  build_date=$(date -u -d "$time" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo "$time")
  local pkg=sigs.k8s.io/lws/pkg/version
  run_step "build $LWS_BINARY" "$LWS_LOG_DIR/build-$LWS_BINARY.log" "$GOMOD_DIR/$LWS_WRAPPER" \
    go build -mod=readonly -buildvcs=false -trimpath \
    -ldflags="-s -w -X $pkg.GitVersion=$LWS_VERSION${commit:+ -X $pkg.GitCommit=$commit}${build_date:+ -X $pkg.BuildDate=$build_date}" \
    -o "$partial" "$LWS_PACKAGE"
  run_step "check $LWS_BINARY version" "$LWS_LOG_DIR/check-$LWS_BINARY.log" "$LWS_DIR/bin" \
    check_lws_binary "$partial"
  run_step "copy LWS manifests" "$LWS_LOG_DIR/manifests.log" "$GOMOD_DIR/$LWS_WRAPPER" \
    copy_lws_manifests "$LWS_DIR/share/lws"
  mv -f "$partial" "$LWS_DIR/bin/$LWS_BINARY"
  {
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "go: ${GO_VERSION:-unknown}"
    echo "platform: $(uname -s)/$(uname -m)"
    echo "recipe: $LWS_RECIPE_REVISION"
    echo "LWS_VERSION: $LWS_VERSION"
  } >"$LWS_MARKER.$$"
  mv -f "$LWS_MARKER.$$" "$LWS_MARKER"
  note "built $LWS_BINARY and its manifests in $((SECONDS - start))s"
}

# The default build includes the LWS controller, except when MMOP_SANDBOX_BIN_DIR says the
# binaries are prebuilt (there may be no Go): then only MMOP_LWS_DIR or `--lws` provides it.
lws_in_default_build() {
  [[ -n ${MMOP_LWS_DIR:-} || -z ${MMOP_SANDBOX_BIN_DIR:-} ]]
}

# Where each binary is taken from: per-binary variable, else MMOP_SANDBOX_BIN_DIR, else the cache.
resolved_path_of() {
  local name=$1 var
  var=$(override_var_of "$name")
  if [[ -n ${!var:-} ]]; then
    (cd "$(dirname "${!var}")" && printf '%s/%s\n' "$(pwd)" "$(basename "${!var}")")
  else
    printf '%s/%s\n' "$(reported_bin_dir)" "$name"
  fi
}

main() {
  local mode=build
  case ${1:-} in
    "") ;;
    --print-dir) mode=print-dir ;;
    --print-env) mode=print-env ;;
    --lws) mode=lws ;;
    --print-lws-dir) mode=print-lws-dir ;;
    --sync) mode=sync ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *) usage_error "unknown argument: $1" ;;
  esac
  if [[ $mode == sync ]]; then
    (($# <= 2)) || usage_error "--sync takes one wrapper name at most"
  else
    (($# <= 1)) || usage_error "one argument at most"
  fi

  load_versions
  case $mode in
    sync)
      do_sync "${2:-}"
      return
      ;;
  esac
  set_cache_dirs
  set_lws_dirs
  case $mode in
    print-dir) reported_bin_dir ;;
    print-lws-dir) echo "$LWS_DIR" ;;
    lws)
      ensure_lws_built
      echo "$LWS_DIR"
      ;;
    build)
      ensure_built
      if lws_in_default_build; then
        ensure_lws_built
      else
        note "LWS controller not built: MMOP_SANDBOX_BIN_DIR is set (set MMOP_LWS_DIR, or run $0 --lws)"
      fi
      reported_bin_dir
      ;;
    print-env)
      ensure_built
      local name
      for name in "${BINARIES[@]}"; do
        printf '%s=%q\n' "$(override_var_of "$name")" "$(resolved_path_of "$name")"
      done
      if lws_in_default_build; then
        ensure_lws_built
        printf 'MMOP_LWS_DIR=%q\n' "$LWS_DIR"
      fi
      ;;
  esac
}

main "$@"
