# syntax=docker/dockerfile:1
#
# Seawall container image (multi-stage).
#
#   docker build -t seawall:dev .
#   docker run --rm -p 8080:8080 -p 9091:9091 -e SEAWALL_ADMIN_TOKEN=change-me \
#     -e SEAWALL_UPSTREAM=http://host:3000 seawall:dev
#
# The runtime image has no shell and no package manager. There is deliberately no
# HEALTHCHECK: Kubernetes probes /healthz and /readyz on the admin port (see k8s/), and the
# preStop hook uses the kubelet's native sleep action instead of `sh -c sleep`.
# The listeners bind 0.0.0.0, so an admin token (SEAWALL_ADMIN_TOKEN) is required at run time;
# the origin is SEAWALL_UPSTREAM (http://app:3000[,http://app2:3000]): the baked config has
# no upstream of its own. Mount a config over /etc/seawall/proxy.toml for more.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build

# rust-toolchain.toml is not copied on purpose: the image already carries the pinned
# toolchain, and the file would make rustup fetch the clippy/rustfmt components it lists.

# 1. Dependencies only. Stub targets stand in for the sources, so this layer (the slow part
#    of the build) is reused until Cargo.toml or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
COPY .cargo/config.toml ./.cargo/config.toml
RUN mkdir -p src benches \
    && printf 'fn main() {}\n' > src/main.rs \
    && touch src/lib.rs \
    && printf 'fn main() {}\n' > benches/cache.rs \
    && cargo build --locked --release \
    && rm -rf src benches \
        target/release/seawall target/release/seawall.d target/release/libseawall.* \
        target/release/deps/seawall-* target/release/deps/libseawall-* \
        target/release/.fingerprint/seawall-*

# 2. The real sources (benches/ too: Cargo.toml declares the `cache` bench target).
COPY src ./src
COPY benches ./benches
RUN cargo build --locked --release \
    && install -D -m 0755 target/release/seawall /out/seawall \
    && /out/seawall --version

# Runtime: glibc + libgcc + CA certificates, no shell, uid/gid 65532 ("nonroot").
# Pin by digest (…:nonroot@sha256:…) in a release pipeline.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="seawall" \
      org.opencontainers.image.description="Caching reverse proxy that shields slow backends" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/seawall /usr/local/bin/seawall
COPY deploy/proxy.container.toml /etc/seawall/proxy.toml

USER 65532:65532
# 8080: data (proxied traffic); 9091: admin (/healthz, /readyz, /metrics, /admin/*).
EXPOSE 8080 9091

ENTRYPOINT ["/usr/local/bin/seawall"]
CMD ["run", "--config", "/etc/seawall/proxy.toml"]
