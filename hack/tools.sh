#!/usr/bin/env bash
# Builds (once) and locates the binaries of the real control plane the tests,
# the demo and the benchmarks run on: etcd, kube-apiserver,
# kube-controller-manager, kubectl and helm; plus Prometheus and promtool,
# the prometheus-operator CRDs for ServiceMonitor and PrometheusRule,
# prometheus-operator-config (the operator's own scrape configuration, for
# the ServiceMonitor test), and podman with runc for the images and the
# container tests.
#
#   hack/tools.sh install [PROFILE]   build or fetch whatever is missing
#   hack/tools.sh env [PROFILE]       install, then print `export TEST_ASSET_...=`
#                                  lines (and PROMETHEUS, PROMTOOL,
#                                  PROMETHEUS_OPERATOR_CRDS,
#                                  PROMETHEUS_OPERATOR_CONFIG, CONTAINERS_CONF,
#                                  CONTAINERS_STORAGE_CONF)
#                                  (use: eval "$(hack/tools.sh env)")
# `demo` limits both to what `make demo` and `make up` run: etcd, the three
# Kubernetes binaries and helm; no Prometheus, no podman. `image` is podman
# and runc alone (make image, and `podman push` of what it built). `release` is what
# hack/release.sh runs: helm, podman, cosign (COSIGN) and cargo-cyclonedx
# (CARGO_CYCLONEDX); a user's own binaries win, as above.
#
# Versions come from hack/versions.env and nowhere else. Binaries are built from
# Go modules with the machine's `go` into
#   ${SYNCSECRET_CACHE:-${XDG_CACHE_HOME:-~/.cache}/syncsecret}/<name>/<version>/
# and reused from then on. Binaries a user already has win, as with envtest:
# TEST_ASSET_ETCD, TEST_ASSET_KUBE_APISERVER, TEST_ASSET_KUBE_CONTROLLER_MANAGER,
# TEST_ASSET_KUBECTL, TEST_ASSET_HELM, then $KUBEBUILDER_ASSETS/<name>.
# envtest bundles carry no kube-controller-manager, so that one is built even then.
#
# prometheus and promtool are Debian's `prometheus` package
# (PROMETHEUS_DEB_VERSION), installed with apt-get into /usr/bin unless both are
# there already; a user's own win: PROMETHEUS, PROMTOOL. The CRDs are copied
# from the prometheus-operator Go module (PROMETHEUS_OPERATOR_VERSION) into
#   <cache>/prometheus-operator-crds/<version>/
# unless PROMETHEUS_OPERATOR_CRDS names a directory that already holds them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${SYNCSECRET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/syncsecret}
export GOTOOLCHAIN=local CGO_ENABLED=0
# A user's GOFLAGS (e.g. -mod=vendor) must not change how upstream builds.
export GOFLAGS=-buildvcs=false

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }


# The env var a user can set for a binary, as envtest names them (Prometheus's
# by their own names).
asset_var() {
    case $1 in
        prometheus | promtool) echo "$1" | tr 'a-z' 'A-Z' ;;
        *) echo "TEST_ASSET_$(echo "$1" | tr 'a-z-' 'A-Z_')" ;;
    esac
}

binaries="etcd kube-apiserver kube-controller-manager kubectl helm prometheus promtool"

# The prometheus-operator CRDs, as named in its example/prometheus-operator-crd/.
crd_files="monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml"

# Every TEST_ASSET_* variable (and PROMETHEUS, PROMTOOL) that is set must name
# an executable, PROMETHEUS_OPERATOR_CRDS a directory with the CRDs: checked
# once, up front, because the functions below run in command substitutions,
# where a failure would not stop the script.
check_assets() {
    local name var f
    for name in $binaries; do
        var=$(asset_var "$name")
        if [ -n "${!var:-}" ] && [ ! -x "${!var}" ]; then
            die "$var=${!var} is not an executable file"
        fi
    done
    if [ -n "${PROMETHEUS_OPERATOR_CONFIG:-}" ] && [ ! -x "$PROMETHEUS_OPERATOR_CONFIG" ]; then
        die "PROMETHEUS_OPERATOR_CONFIG=$PROMETHEUS_OPERATOR_CONFIG is not an executable file"
    fi
    if [ -n "${PROMETHEUS_OPERATOR_CRDS:-}" ]; then
        for f in $crd_files; do
            [ -f "$PROMETHEUS_OPERATOR_CRDS/$f" ] ||
                die "PROMETHEUS_OPERATOR_CRDS=$PROMETHEUS_OPERATOR_CRDS holds no $f"
        done
    fi
}

# Where a binary a user already has lives, or nothing.
provided() {
    local name=$1 var
    var=$(asset_var "$name")
    if [ -n "${!var:-}" ]; then
        echo "${!var}"
    elif [ "$name" != helm ] && [ "$name" != prometheus ] && [ "$name" != promtool ] &&
        [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$name" ]; then
        echo "$KUBEBUILDER_ASSETS/$name"
    fi
}

# The version directory of each binary in the cache.
cache_dir() {
    case $1 in
        etcd) echo "$cache/etcd/$ETCD_VERSION" ;;
        helm) echo "$cache/helm/$HELM_VERSION" ;;
        *) echo "$cache/k8s/$K8S_VERSION" ;;
    esac
}

# The path the tests use for a binary: the user's, else the cached one.
resolve() {
    local p
    p=$(provided "$1")
    [ -n "$p" ] && { echo "$p"; return; }
    case $1 in
        prometheus | promtool) echo "/usr/bin/$1" ;;
        *) echo "$(cache_dir "$1")/$1" ;;
    esac
}

# A field of `go mod download -json MODULE@VERSION` (GoMod, Info, ...).
mod_field() {
    command -v go >/dev/null || die "Go is not installed; the control plane is built from Go modules (https://go.dev/doc/install)"
    go mod download -json "$1" | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}$/\1/p"
}

# Writes a wrapper module into $1 that requires $2@$3, with the go and godebug
# lines of the upstream go.mod $4, plus extra lines from stdin.
write_wrapper() {
    local dir=$1 mod=$2 ver=$3 upstream=$4
    mkdir -p "$dir"
    {
        echo "// Generated by hack/tools.sh: a wrapper to build $mod@$ver. Do not edit."
        echo "module syncsecret.local/tools/$(basename "$dir")"
        echo
        grep -E '^go [0-9]' "$upstream"
        grep -E '^godebug ' "$upstream" || true
        echo
        echo "require $mod $ver"
        cat
    } >"$dir/go.mod"
}

# Builds the main packages given as "name=package" into dest, stamping ldflags.
go_build() {
    local dir=$1 dest=$2 ldflags=$3; shift 3
    local tmp
    tmp=$(mktemp -d "$dest.tmp.XXXXXX")
    local pkg pid start=$SECONDS next=30
    for pkg in "$@"; do
        # A background job ignores Ctrl-C; stop the build with the script,
        # or it would keep running and holding the cache lock.
        pid=""
        trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$tmp"; exit 130' INT
        trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$tmp"; exit 143' TERM
        (cd "$dir" && exec go build -mod=mod -trimpath -ldflags "-s -w $ldflags" -o "$tmp/${pkg%%=*}" "${pkg#*=}") &
        pid=$!
        # go build prints nothing until it is done, minutes later: say that it
        # is still working, and for how long.
        while kill -0 "$pid" 2>/dev/null; do
            sleep 1
            if ((SECONDS - start >= next)); then
                log "  ... still building ${pkg%%=*}: $((SECONDS - start)) s so far"
                next=$((next + 30))
            fi
        done
        wait "$pid" || { rm -rf "$tmp"; die "go build of ${pkg#*=} failed (its output is above)"; }
        trap - INT TERM
    done
    for pkg in "$@"; do mv "$tmp/${pkg%%=*}" "$dest/${pkg%%=*}"; done
    rmdir "$tmp"
}

build_k8s() {
    local dest want=() b
    dest=$(cache_dir kube-apiserver)
    for b in kube-apiserver kube-controller-manager kubectl; do
        [ -n "$(provided "$b")" ] || [ -x "$dest/$b" ] || want+=("$b")
    done
    [ ${#want[@]} -gt 0 ] || return 0
    log "building ${want[*]} $K8S_VERSION from Go modules (once; about 7 minutes on 2 cores with empty Go caches)"
    local start=$SECONDS gomod info minor staging date
    gomod=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)
    info=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" Info)
    [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION (is the Go module proxy reachable?)"
    minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    # k8s.io/kubernetes replaces its staging modules with ./staging at v0.0.0;
    # outside its repo they are the published v0.<minor>.<patch> modules.
    staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/.*#\1#p' "$gomod")
    [ -n "$staging" ] || die "no staging replacements found in $gomod: has upstream's layout changed?"
    date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")
    local src="$cache/src/k8s-$K8S_VERSION" v=${K8S_VERSION/#v1./v0.}
    {
        echo
        echo "replace ("
        for b in $staging; do echo "	$b => $b $v"; done
        echo ")"
    } | write_wrapper "$src" k8s.io/kubernetes "$K8S_VERSION" "$gomod"
    local ld="" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    mkdir -p "$dest"
    local pkgs=()
    for b in "${want[@]}"; do pkgs+=("$b=k8s.io/kubernetes/cmd/$b"); done
    go_build "$src" "$dest" "$ld" "${pkgs[@]}"
    log "built ${want[*]} in $((SECONDS - start)) s"
}

# Builds one main package of a Go module into dest, through a wrapper
# module of its own, so that one tool's dependency versions never move
# another's: build_tool NAME VERSION MODULE PACKAGE LDFLAGS DEST.
build_tool() {
    local name=$1 version=$2 module=$3 package=$4 ldflags=$5 dest=$6
    log "building $name $version from Go modules (once)"
    local start=$SECONDS gomod
    gomod=$(mod_field "$module@$version" GoMod)
    [ -f "$gomod" ] || die "could not download $module@$version (is the Go module proxy reachable?)"
    write_wrapper "$cache/src/$name-$version" "$module" "$version" "$gomod" </dev/null
    mkdir -p "$dest"
    go_build "$cache/src/$name-$version" "$dest" "$ldflags" "$name=$package"
    log "built $name in $((SECONDS - start)) s"
}

build_etcd() {
    local dest
    dest=$(cache_dir etcd)
    [ -n "$(provided etcd)" ] || [ -x "$dest/etcd" ] && return 0
    build_tool etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 "" "$dest"
}

build_helm() {
    local dest major=${HELM_VERSION%%.*}
    dest=$(cache_dir helm)
    [ -n "$(provided helm)" ] || [ -x "$dest/helm" ] && return 0
    local p="helm.sh/helm/$major/internal/version"
    build_tool helm "$HELM_VERSION" "helm.sh/helm/$major" "helm.sh/helm/$major/cmd/helm" \
        "-X $p.version=$HELM_VERSION -X $p.metadata= -X $p.gitTreeState=clean" "$dest"
}

# cosign, for hack/release.sh's signatures.
build_cosign() {
    local dest="$cache/cosign/$COSIGN_VERSION" major=${COSIGN_VERSION%%.*}
    [ -n "${COSIGN:-}" ] || [ -x "$dest/cosign" ] && return 0
    build_tool cosign "$COSIGN_VERSION" "github.com/sigstore/cosign/$major" "github.com/sigstore/cosign/$major/cmd/cosign" \
        "-X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION" "$dest"
}

# hack/prometheus-operator-config: the scrape configuration
# prometheus-operator generates for a ServiceMonitor, from the operator's
# own Go module (e2e/tests/servicemonitor.rs). Rebuilt when main.go changes.
promcfg_dir() {
    local sum
    sum=$(sha256sum "$here/prometheus-operator-config/main.go") ||
        die "no $here/prometheus-operator-config/main.go"
    echo "$cache/prometheus-operator-config/$PROMETHEUS_OPERATOR_VERSION-${sum:0:12}"
}

# A PROMETHEUS_OPERATOR_CONFIG that an earlier `env` printed (a build in
# the cache) is ours, not the user's: rebuilt when main.go changed.
if [ -n "${PROMETHEUS_OPERATOR_CONFIG:-}" ]; then
    case $PROMETHEUS_OPERATOR_CONFIG in "$cache"/prometheus-operator-config/*) unset PROMETHEUS_OPERATOR_CONFIG ;; esac
fi

build_promcfg() {
    local dest src module=github.com/prometheus-operator/prometheus-operator
    dest=$(promcfg_dir)
    [ -n "${PROMETHEUS_OPERATOR_CONFIG:-}" ] || [ -x "$dest/prometheus-operator-config" ] && return 0
    log "building prometheus-operator-config against $module $PROMETHEUS_OPERATOR_VERSION (once)"
    local start=$SECONDS gomod
    gomod=$(mod_field "$module@$PROMETHEUS_OPERATOR_VERSION" GoMod)
    [ -f "$gomod" ] || die "could not download $module@$PROMETHEUS_OPERATOR_VERSION (is the Go module proxy reachable?)"
    src="$cache/src/prometheus-operator-config-$PROMETHEUS_OPERATOR_VERSION"
    write_wrapper "$src" "$module" "$PROMETHEUS_OPERATOR_VERSION" "$gomod" </dev/null
    cp "$here/prometheus-operator-config/main.go" "$src/main.go"
    mkdir -p "$dest"
    go_build "$src" "$dest" "" "prometheus-operator-config=."
    log "built prometheus-operator-config in $((SECONDS - start)) s"
}

# cargo-cyclonedx, for hack/release.sh's SBOMs.
install_cyclonedx() {
    local dest="$cache/cargo-cyclonedx/$CARGO_CYCLONEDX_VERSION"
    [ -n "${CARGO_CYCLONEDX:-}" ] || [ -x "$dest/bin/cargo-cyclonedx" ] && return 0
    command -v cargo >/dev/null || die "no cargo: install Rust (https://rustup.rs)"
    log "building cargo-cyclonedx $CARGO_CYCLONEDX_VERSION with cargo install (once)"
    local start=$SECONDS
    cargo install --quiet --locked --root "$dest" --version "$CARGO_CYCLONEDX_VERSION" cargo-cyclonedx >&2 ||
        die "cargo install cargo-cyclonedx@$CARGO_CYCLONEDX_VERSION failed (is crates.io reachable?)"
    log "built cargo-cyclonedx in $((SECONDS - start)) s"
}

# Runs a command as root: directly, or through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "installing prometheus needs root (or sudo); or set PROMETHEUS and PROMTOOL"
    fi
}

apt_install_prometheus() {
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "prometheus=$PROMETHEUS_DEB_VERSION" >&2
}

# The packaged daemon's processes (run as user prometheus), zombies left out:
# a stopped daemon can linger as one until init reaps it.
packaged_prometheus() {
    local pid
    for pid in $(pgrep -x -u prometheus prometheus 2>/dev/null); do
        case $(ps -o stat= -p "$pid" 2>/dev/null) in
            Z* | "") ;;
            *) ps -o pid=,args= -p "$pid" ;;
        esac
    done
}

# Debian's postinst starts the packaged daemon (on :9090) wherever services may
# start, i.e. unless a policy-rc.d forbids it. Nothing here wants it running:
# stop it again.
stop_packaged_prometheus() {
    local running
    running=$(packaged_prometheus)
    [ -n "$running" ] || return 0
    log "stopping the prometheus daemon the package started: $(echo $running)"
    if [ -d /run/systemd/system ]; then
        as_root systemctl stop prometheus.service >&2
    else
        as_root /etc/init.d/prometheus stop >&2
    fi
    running=$(packaged_prometheus)
    [ -z "$running" ] || die "the packaged prometheus daemon still runs: $(echo $running)"
}

install_prometheus() {
    local b want=()
    for b in prometheus promtool; do
        [ -n "$(provided "$b")" ] || [ -x "/usr/bin/$b" ] || want+=("$b")
    done
    if [ ${#want[@]} -eq 0 ]; then
        local have
        have=$(dpkg-query -W -f '${Version}' prometheus 2>/dev/null || true)
        if [ -z "$(provided prometheus)" ] && [ "$have" != "$PROMETHEUS_DEB_VERSION" ]; then
            log "note: /usr/bin/prometheus is ${have:+Debian's }${have:-not from Debian's package}, not $PROMETHEUS_DEB_VERSION"
        fi
        return 0
    fi
    command -v apt-get >/dev/null ||
        die "no apt-get: install prometheus ${PROMETHEUS_DEB_VERSION%%+*} yourself and set PROMETHEUS and PROMTOOL"
    log "installing ${want[*]} from Debian's prometheus $PROMETHEUS_DEB_VERSION (once)"
    if ! apt_install_prometheus; then
        log "apt-get install failed; running apt-get update and trying again"
        as_root apt-get update -q >&2 || die "apt-get update failed"
        apt_install_prometheus ||
            die "could not install prometheus=$PROMETHEUS_DEB_VERSION (apt-cache policy prometheus shows what Debian serves; update PROMETHEUS_DEB_VERSION in hack/versions.env)"
    fi
    stop_packaged_prometheus
    for b in "${want[@]}"; do
        [ -x "/usr/bin/$b" ] || die "the prometheus package installed no /usr/bin/$b"
    done
}

# podman and runc from Debian's packages, for `make image` and the container
# tests. They run with hack/podman/containers.conf and a storage
# configuration written into the cache; a user's own CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF win.
install_podman() {
    if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
        command -v apt-get >/dev/null ||
            die "no apt-get: install podman and runc yourself (podman ${PODMAN_DEB_VERSION%%+*}, runc ${RUNC_DEB_VERSION%%+*} are tested)"
        log "installing podman $PODMAN_DEB_VERSION and runc $RUNC_DEB_VERSION from Debian (once)"
        local pkgs=("podman=$PODMAN_DEB_VERSION" "runc=$RUNC_DEB_VERSION")
        if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >&2; then
            log "apt-get install failed; running apt-get update and trying again"
            as_root apt-get update -q >&2 || die "apt-get update failed"
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >&2 ||
                die "could not install ${pkgs[*]} (apt-cache policy podman runc shows what Debian serves; update hack/versions.env)"
        fi
    fi
    # A user's own storage configuration wins.
    [ -z "${CONTAINERS_STORAGE_CONF:-}" ] || return 0
    mkdir -p "$cache/podman"
    # vfs: no overlay mounts needed, which a container-in-a-sandbox may lack.
    cat >"$cache/podman/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$cache/podman/storage"
runroot = "$cache/podman/run"
CONF
}

# Copies the ServiceMonitor and PrometheusRule CRDs out of the
# prometheus-operator Go module (the proxy serves its whole tree).
fetch_operator_crds() {
    local dest="$cache/prometheus-operator-crds/$PROMETHEUS_OPERATOR_VERSION" f missing=""
    [ -z "${PROMETHEUS_OPERATOR_CRDS:-}" ] || return 0
    for f in $crd_files; do [ -f "$dest/$f" ] || missing=1; done
    [ -n "$missing" ] || return 0
    log "fetching the prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs from Go modules (once)"
    local mod="github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" dir tmp
    dir=$(mod_field "$mod" Dir || true)
    [ -d "$dir" ] || die "could not download $mod (is the Go module proxy reachable?)"
    mkdir -p "$(dirname "$dest")"
    tmp=$(mktemp -d "$dest.tmp.XXXXXX")
    for f in $crd_files; do
        local src="$dir/example/prometheus-operator-crd/$f" name=${f#monitoring.coreos.com_}
        [ -f "$src" ] || die "no $src: has upstream's layout changed?"
        # A CRD of monitoring.coreos.com serving v1, by the lines that say so.
        grep -qx 'kind: CustomResourceDefinition' "$src" &&
            grep -qx "  name: ${name%.yaml}.monitoring.coreos.com" "$src" &&
            grep -qx '  group: monitoring.coreos.com' "$src" &&
            grep -qx '  - name: v1' "$src" ||
            die "$src is not the v1 CustomResourceDefinition of ${name%.yaml}.monitoring.coreos.com"
        cp "$src" "$tmp/$f"
        chmod 0644 "$tmp/$f"
    done
    chmod 0755 "$tmp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
}

# What a profile needs: everything (all), the control plane and helm
# (demo), podman (image), or what hack/release.sh runs (release).
steps() {
    case $1 in
        all) echo "build_etcd build_k8s build_helm install_prometheus install_podman fetch_operator_crds build_promcfg" ;;
        demo) echo "build_etcd build_k8s build_helm" ;;
        image) echo "install_podman" ;;
        release) echo "build_helm install_podman build_cosign install_cyclonedx" ;;
    esac
}

install() {
    local profile=$1 step n=0 total
    check_assets
    mkdir -p "$cache"
    # One build at a time, even from two terminals.
    exec 9>"$cache/.lock"
    if ! flock -n 9; then
        log "another hack/tools.sh holds $cache/.lock (a build in another shell?); waiting for it"
        flock 9
    fi
    total=$(steps "$profile" | wc -w)
    for step in $(steps "$profile"); do
        n=$((n + 1))
        log "[$n/$total] ${step//_/ }"
        "$step"
    done
    exec 9>&-
}

print_env() {
    local b
    if [ "$1" = image ]; then
        echo "export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/podman/containers.conf}"
        echo "export CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF:-$cache/podman/storage.conf}"
        return 0
    fi
    if [ "$1" = release ]; then
        echo "export TEST_ASSET_HELM=$(resolve helm)"
        echo "export COSIGN=${COSIGN:-$cache/cosign/$COSIGN_VERSION/cosign}"
        echo "export CARGO_CYCLONEDX=${CARGO_CYCLONEDX:-$cache/cargo-cyclonedx/$CARGO_CYCLONEDX_VERSION/bin/cargo-cyclonedx}"
        echo "export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/podman/containers.conf}"
        echo "export CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF:-$cache/podman/storage.conf}"
        return 0
    fi
    for b in $binaries; do
        if [ "$1" = demo ]; then
            case $b in prometheus | promtool) continue ;; esac
        fi
        echo "export $(asset_var "$b")=$(resolve "$b")"
    done
    [ "$1" = all ] || return 0
    echo "export PROMETHEUS_OPERATOR_CRDS=${PROMETHEUS_OPERATOR_CRDS:-$cache/prometheus-operator-crds/$PROMETHEUS_OPERATOR_VERSION}"
    echo "export PROMETHEUS_OPERATOR_CONFIG=${PROMETHEUS_OPERATOR_CONFIG:-$(promcfg_dir)/prometheus-operator-config}"
    echo "export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/podman/containers.conf}"
    echo "export CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF:-$cache/podman/storage.conf}"
}

profile=${2:-all}
case $profile in all | demo | image | release) ;; *) echo "usage: $0 install|env [demo|image|release]" >&2; exit 2 ;; esac
case ${1:-} in
    install) install "$profile" ;;
    env) install "$profile"; print_env "$profile" ;;
    *) echo "usage: $0 install|env [demo|image|release]" >&2; exit 2 ;;
esac
