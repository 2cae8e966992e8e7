# syntax=docker/dockerfile:1
#
# Seawall container image (multi-stage).
#
#   docker build -t seawall:dev --build-arg SEAWALL_COMMIT="$(git rev-parse --short=12 HEAD)" .
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
# The commit `seawall --version` and seawall_build_info name (.git is not in the context).
ARG SEAWALL_COMMIT=unknown

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
    && printf 'fn main() {}\n' > benches/entry_overhead.rs \
    && printf 'fn main() {}\n' > benches/pass.rs \
    && cargo build --locked --profile dist \
    && rm -rf src benches \
        target/dist/seawall target/dist/seawall.d target/dist/libseawall.* \
        target/dist/deps/seawall-* target/dist/deps/libseawall-* \
        target/dist/.fingerprint/seawall-*

# 2. The real sources (benches/ too: Cargo.toml declares the `cache` bench target), and
#    build.rs, which records SEAWALL_COMMIT. Profile `dist`: release without debug info.
COPY build.rs ./
COPY src ./src
COPY benches ./benches
RUN SEAWALL_COMMIT="${SEAWALL_COMMIT}" cargo build --locked --profile dist \
    && install -D -m 0755 target/dist/seawall /out/seawall \
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
