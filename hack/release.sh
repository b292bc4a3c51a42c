#!/usr/bin/env bash
# A release: images, charts, SBOMs, checksums and signatures in dist/<version>/.
#
#   hack/release.sh [--unreleased]                 everything this machine can do offline
#   hack/release.sh --push REGISTRY [--unreleased] also the multi-arch images, pushed and
#                                                  signed (needs docker buildx, the registries
#                                                  the Dockerfile pulls its bases from, a
#                                                  clean tree and COSIGN_KEY)
#
# The version is the workspace's; CHANGELOG.md must have its section
# (`## [0.1.0] - <date>`; --unreleased takes `## Unreleased (0.1.0)`, for
# a dry run).
#
# Signing key: COSIGN_KEY (a cosign private key file; COSIGN_PASSWORD its
# password, which must be set, empty or not). Without one (offline only), a
# key pair is made for this run and said so: the signatures then prove the
# steps work, not who released.
#
# Tools come from `hack/tools.sh env release` (helm, podman, cosign,
# cargo-cyclonedx); versions in hack/versions.env.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
log() { printf '[release] %s\n' "$*" >&2; }
die() { printf '[release] error: %s\n' "$*" >&2; exit 1; }

registry="" unreleased=""
while [ $# -gt 0 ]; do
    case $1 in
        --push) registry=${2:?--push needs a registry, e.g. ghcr.io/syncsecret}; shift 2 ;;
        --unreleased) unreleased=1; shift ;;
        *) die "unknown argument $1 (usage: hack/release.sh [--push REGISTRY] [--unreleased])" ;;
    esac
done
tree=$(git status --porcelain) || die "git status failed: is this a git checkout git trusts?"
if [ -n "$registry" ]; then
    # What is published says which commit it is: only a clean tree is.
    [ -z "$tree" ] || die "--push needs a clean tree: commit or stash first"
    [ -n "${COSIGN_KEY:-}" ] || die "--push needs COSIGN_KEY: a throwaway key's signatures in a registry would look real and prove nothing"
fi
if [ -n "${COSIGN_KEY:-}" ] && [ -z "${COSIGN_PASSWORD+set}" ]; then
    die "COSIGN_KEY is set but COSIGN_PASSWORD is not (set it, empty for an unencrypted key): cosign would wait for a password"
fi

env_lines=$(hack/tools.sh env release)
eval "$env_lines"
helm=$TEST_ASSET_HELM

version=$(cargo metadata --locked --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "syncsecret-ccm"))')
if ! grep -q "^## \[$version\]" CHANGELOG.md; then
    [ -n "$unreleased" ] && grep -q "^## Unreleased ($version)" CHANGELOG.md ||
        die "CHANGELOG.md has no section '## [$version] - <date>' (--unreleased takes '## Unreleased ($version)' for a dry run)"
    log "note: CHANGELOG.md still calls $version Unreleased (--unreleased): a dry run, not a release"
fi
revision=$(git rev-parse HEAD)
[ -z "$tree" ] || log "note: the tree has uncommitted changes; the local images say so (-dirty)"
dist=dist/$version
rm -rf "$dist"
mkdir -p "$dist"
work=$(mktemp -d)
# SBOM files cargo-cyclonedx writes beside each crate, and the scratch
# directory, go whatever happens.
trap 'rm -rf "$work"; rm -f api/sbom.json api/runtime/sbom.json ccm/sbom.json manager/sbom.json e2e/sbom.json' EXIT
log "release $version at $revision into $dist/"

# 1. Charts, linted as CI lints them. Published ones point at the registry
# they are pushed to; local ones keep image.repository required.
for chart in syncsecret-ccm syncsecret-manager; do
    cp -r "charts/$chart" "$work/$chart"
    if [ -n "$registry" ]; then
        sed -i "s|^  repository: \"\"$|  repository: $registry/$chart|" "$work/$chart/values.yaml"
        grep -q "^  repository: $registry/$chart$" "$work/$chart/values.yaml" ||
            die "could not set image.repository in $chart's values.yaml"
    fi
    set_values=(--set "image.repository=${registry:-localhost/syncsecret}/$chart")
    [ "$chart" = syncsecret-ccm ] && set_values+=(--set clusterName=lint --set kubelbKubeconfig.secretName=lint)
    "$helm" lint --strict "$work/$chart" "${set_values[@]}" >/dev/null
    "$helm" package "$work/$chart" --version "$version" --app-version "$version" -d "$dist" >/dev/null
    log "chart $dist/$chart-$version.tgz"
done

# 2. SBOMs: every crate each binary may be built from, for any target
# (CycloneDX JSON; --target all, since the images are musl amd64 and arm64).
"$CARGO_CYCLONEDX" cyclonedx --format json --spec-version 1.5 --target all \
    --override-filename sbom >/dev/null
for bin in syncsecret-ccm syncsecret-manager; do
    crate_dir=${bin#syncsecret-}
    mv "$crate_dir/sbom.json" "$dist/$bin-$version.cdx.json"
    components=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["components"]))' "$dist/$bin-$version.cdx.json") ||
        die "$dist/$bin-$version.cdx.json is not a CycloneDX SBOM"
    log "SBOM $dist/$bin-$version.cdx.json ($components components)"
done

# 3. Images, last of the builds: nothing is pushed before the rest passed.
if [ -n "$registry" ]; then
    command -v docker >/dev/null && docker buildx version >/dev/null 2>&1 ||
        die "--push needs docker buildx (multi-arch builds from the Dockerfile)"
    for bin in syncsecret-ccm syncsecret-manager; do
        log "image $registry/$bin:$version for linux/amd64 and linux/arm64 (docker buildx)"
        docker buildx build --platform linux/amd64,linux/arm64 --push \
            --build-arg BIN="$bin" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
            --metadata-file "$dist/$bin.image.json" -t "$registry/$bin:$version" .
    done
else
    log "multi-arch images: not built (they need docker buildx and the registries the Dockerfile pulls from; hack/release.sh --push REGISTRY does it)"
    log "images for this machine's architecture instead, from make image, saved as OCI archives"
    hack/image.sh "$version"
    for bin in syncsecret-ccm syncsecret-manager; do
        podman save --quiet --format oci-archive -o "$dist/$bin-$version-$(uname -m).oci.tar" \
            "localhost/syncsecret/$bin:$version"
    done
fi

# 4. Checksums and signatures.
(cd "$dist" && sha256sum -- * >SHA256SUMS)
if [ -z "${COSIGN_KEY:-}" ]; then
    log "no COSIGN_KEY: signing with a key pair made for this run only ($dist/cosign.pub)"
    (cd "$work" && COSIGN_PASSWORD="" "$COSIGN" generate-key-pair >/dev/null) ||
        die "cosign could not make a key pair"
    export COSIGN_KEY=$work/cosign.key COSIGN_PASSWORD=""
    cp "$work/cosign.pub" "$dist/cosign.pub"
else
    "$COSIGN" public-key --key "$COSIGN_KEY" >"$dist/cosign.pub"
fi
# --tlog-upload=false: the transparency log (Rekor) is on the internet; a
# signature with a key needs none to be checked.
for f in "$dist"/*; do
    case $f in *.sig | */cosign.pub) continue ;; esac
    "$COSIGN" sign-blob --yes --tlog-upload=false --key "$COSIGN_KEY" --output-signature "$f.sig" "$f" >/dev/null ||
        die "cosign could not sign $f (its words are above)"
    "$COSIGN" verify-blob --insecure-ignore-tlog --key "$dist/cosign.pub" --signature "$f.sig" "$f" >/dev/null ||
        die "the signature of $f does not verify (cosign's words are above)"
done
log "signed and verified $(find "$dist" -name '*.sig' | wc -l) files with $dist/cosign.pub"
if [ -n "$registry" ]; then
    for bin in syncsecret-ccm syncsecret-manager; do
        digest=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["containerimage.digest"])' "$dist/$bin.image.json")
        "$COSIGN" sign --yes --tlog-upload=false --key "$COSIGN_KEY" "$registry/$bin@$digest"
        log "signed $registry/$bin@$digest"
    done
else
    log "image signatures: not made (cosign signs an image in the registry that holds it; with --push)"
fi
log "done: $dist/"
ls -la "$dist" >&2
