# Mensageria: one image, four binaries (broker, proxy, server, client).
#
#   docker build -t mensageria:0.1.0 .
#   docker run --rm -p 5555:5555 -p 9101:9101 mensageria:0.1.0             # broker (default)
#   docker run --rm -e SERVICE=proxy mensageria:0.1.0 proxy                  # any other role
#   docker run --rm -e SERVICE=client mensageria:0.1.0 client run
#
# The image HEALTHCHECK runs "$SERVICE healthcheck" (GET /readyz on HTTP_ADDR), so set
# SERVICE to the role you run when you override the command; docker-compose.yml sets an
# explicit healthcheck per service instead.
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) -> builder (cached
# dependency layer, then the workspace) -> runtime (debian slim, non-root). The binaries carry
# libzmq and libsodium (compiled from source and linked statically by zmq-sys, see
# vendor/zmq-sys), so neither image installs a libzmq package.

# Base images are pinned to version tags (bump deliberately; rust tag >= rust-version in Cargo.toml).
# The rust image (buildpack-deps) already has what the libzmq/libsodium build needs: gcc, g++, make.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
COPY .cargo .cargo
# The patched zmq-sys ([patch.crates-io] in Cargo.toml): not a workspace member, so not in the
# recipe; the cook needs it, and compiles libzmq and libsodium into this cached layer.
COPY vendor vendor
# Dependencies only: this layer is reused until Cargo.toml, Cargo.lock or vendor/ change.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin broker --bin proxy --bin server --bin client

FROM debian:bookworm-slim AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="mensageria" \
      org.opencontainers.image.description="ZeroMQ request broker, event proxy, worker server and client (one binary per role)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://example.invalid/mensageria" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# No packages to add: the binaries need only libc, libgcc_s and libstdc++ (libzmq is C++),
# which the base image has (apt depends on them). No ca-certificates: OTLP export is plain
# OTLP/HTTP (add it if the exporter ever uses TLS with the system roots).
RUN groupadd --system --gid 10001 mensageria \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mensageria
COPY --from=builder /build/target/release/broker /build/target/release/proxy \
     /build/target/release/server /build/target/release/client /usr/local/bin/
USER 10001:10001
# ZeroMQ: broker 5555 (ROUTER) 5556 (DEALER), proxy 5557 (XSUB) 5558 (XPUB); HTTP ops 9101-9104.
EXPOSE 5555 5556 5557 5558 9101 9102 9103 9104
ENV SERVICE=broker
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/bin/sh", "-c", "exec \"/usr/local/bin/${SERVICE}\" healthcheck"]
CMD ["broker"]
