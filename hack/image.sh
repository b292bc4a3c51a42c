#!/usr/bin/env bash
# make image: both controllers as OCI images built on this machine with
# nothing pulled. Each holds the release binary and exactly the shared
# libraries it loads (as ldd lists them), on an empty base (FROM scratch);
# it runs as a non-root user with a read-only root. The Dockerfile is the
# path for registries (static musl builds, multi-arch).
#
#   hack/image.sh [TAG]    images localhost/syncsecret/<binary>:TAG (default: dev)
#
# podman runs as `hack/tools.sh env` configures it (CONTAINERS_CONF,
# CONTAINERS_STORAGE_CONF).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The files go into the image with these modes: readable by its non-root user.
umask 022
cd "$here/.."
tag=${1:-dev}
log() { printf '[image] %s\n' "$*" >&2; }

command -v podman >/dev/null || { log "error: no podman: run hack/tools.sh install"; exit 1; }
# "-dirty" when built from uncommitted changes.
commit=$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
log "building the release binaries at $commit (cargo build --release; several minutes cold)"
# The commit goes into <prefix>_build_info.
SYNCSECRET_COMMIT=$commit cargo build --release --locked -p syncsecret-ccm -p syncsecret-manager
read -r version source < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
p = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "syncsecret-ccm")
print(p["version"], p["repository"])')

for bin in syncsecret-ccm syncsecret-manager; do
    root=$(mktemp -d)
    chmod 0755 "$root"
    trap 'rm -rf "$root"' EXIT
    install -D -m 0755 "target/release/$bin" "$root/controller"
    # The dynamic loader and every library it resolves; glibc 2.34+ has
    # its DNS and files lookups built in, so name resolution needs no more.
    for lib in $(ldd "target/release/$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        install -D -m 0644 "$lib" "$root$lib"
    done
    chmod 0755 "$root"/lib*/ld-linux* 2>/dev/null || true
    # A home for nothing and a /tmp for nothing: the root stays read-only.
    mkdir -p "$root/tmp"
    chmod 1777 "$root/tmp"
    log "$bin: $(du -sh "$root" | cut -f1) ($(find "$root" -type f | wc -l) files)"
    podman build --quiet \
        --label "org.opencontainers.image.title=$bin" \
        --label "org.opencontainers.image.version=$version" \
        --label "org.opencontainers.image.revision=$commit" \
        --label "org.opencontainers.image.source=$source" \
        --label "org.opencontainers.image.licenses=Apache-2.0" \
        -f "$here/Containerfile.local" -t "localhost/syncsecret/$bin:$tag" "$root" >/dev/null
    rm -rf "$root"
    trap - EXIT
    log "built localhost/syncsecret/$bin:$tag"
done
