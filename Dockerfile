# syntax=docker/dockerfile:1
# Both controllers for a registry, one image per binary and platform:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg BIN=syncsecret-manager --build-arg VERSION=0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) -t <registry>/syncsecret-manager:0.1.0 .
#
# (BIN=syncsecret-ccm for the other). hack/release.sh runs exactly this.
# A static musl binary, built natively for each TARGETARCH (under emulation
# for the foreign one: musl cross toolchains are not in Debian), on a
# distroless static base, non-root. `make image` is the path on a machine
# that cannot pull: it packs the host's build into an image from scratch.
#
# Bases pinned by digest (the multi-platform index), as resolved in 2026-08;
# refresh with `crane digest rust:1.95-bookworm` and
# `crane digest gcr.io/distroless/static-debian12:nonroot`.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab

FROM ${RUST_IMAGE} AS build
ARG TARGETARCH
ARG BIN=syncsecret-manager
ARG REVISION=unknown
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools
WORKDIR /src
COPY . .
# The registry and the target directory are cached between builds, per
# platform; the binary is copied out of the cache mount before it goes.
RUN --mount=type=cache,target=/usr/local/cargo/registry,id=cargo-registry-${TARGETARCH} \
    --mount=type=cache,target=/src/target,id=cargo-target-${TARGETARCH} \
    case "${TARGETARCH}" in \
      amd64) triple=x86_64-unknown-linux-musl ;; \
      arm64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}: amd64 or arm64" >&2; exit 1 ;; \
    esac \
 && rustup target add "${triple}" \
 && SYNCSECRET_COMMIT="${REVISION}" cargo build --release --locked --target "${triple}" -p "${BIN}" --bin "${BIN}" \
 && cp "target/${triple}/release/${BIN}" /controller

FROM ${BASE_IMAGE}
ARG BIN=syncsecret-manager
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="${BIN}" \
      org.opencontainers.image.description="syncsecret: SyncSecrets from tenant clusters into a management cluster" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/syncsecret/syncsecret" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /controller /controller
USER 65532:65532
ENTRYPOINT ["/controller"]
