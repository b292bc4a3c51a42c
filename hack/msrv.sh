#!/usr/bin/env bash
# Checks the declared rust-version (Cargo.toml's workspace.package) against
# what the build uses. Only the pinned toolchain is on this machine, so two
# checks stand in for a build with the older compiler: no dependency in the
# lock file declares a newer rust-version than ours (this script), and no
# std API newer than it is used (clippy's incompatible_msrv lint, which
# reads rust-version, in `make lint`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" |
  python3 -c '
import json, sys, tomllib
declared = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["rust-version"]
def version(v):
    return tuple(int(x) for x in (v.split(".") + ["0", "0"])[:3])
meta = json.load(sys.stdin)
used = {node["id"] for node in meta["resolve"]["nodes"]}
newer = sorted(
    "%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p["id"] in used and p.get("rust_version") and version(p["rust_version"]) > version(declared)
)
if newer:
    print(f"rust-version {declared} is declared, but:", *newer, sep="\n  ", file=sys.stderr)
    print("raise rust-version in Cargo.toml or pin an older release of each", file=sys.stderr)
    sys.exit(1)
print(f"msrv: every dependency builds with the declared Rust {declared}")
'
