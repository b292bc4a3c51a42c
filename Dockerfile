# Both controllers from one Dockerfile: docker build --build-arg BIN=syncsecret-ccm .
# (or BIN=syncsecret-manager). Static musl binary on a distroless, non-root base.
# This workplace has no container engine, so the image is not built in CI here.
FROM rust:1.95-bookworm AS build
ARG BIN=syncsecret-manager
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p "${BIN}" --bin "${BIN}" \
 && cp "target/x86_64-unknown-linux-musl/release/${BIN}" /controller

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /controller /controller
USER 65532:65532
ENTRYPOINT ["/controller"]
