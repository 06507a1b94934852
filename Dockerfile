# Conclave's homeserver image: conclave-homeserver (ENTRYPOINT) and the
# conclave CLI (for debugging), on Debian bookworm, as uid:gid 10001:10001 with
# a read-only root filesystem in mind.
#
# Full build, compiling in release (scripts/build-image):
#   podman build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --tag localhost/conclave-homeserver:0.1.0 .
# Runtime stage only, from binaries compiled already (CI: the debug binaries of
# `cargo test --workspace`): the build context named "binaries", a directory
# holding conclave-homeserver and conclave, takes the place of the stage of
# that name, and the compiling stage is not built:
#   podman build --target runtime --build-context binaries=DIR --build-arg VERSION=... .
#
# The image sets no CONCLAVE_* variable: those override every configuration
# file, and the Helm chart configures the server with one. Without
# configuration the server listens on 127.0.0.1 only and keeps a SQLite
# database under /var/lib/conclave (the only writable place, a volume).

# bookworm, as the runtime stage: binaries (and the C in ring and SQLite)
# built against a newer glibc would not run there.
FROM rust:1.94-slim-bookworm AS build
WORKDIR /src
COPY . .
# The registry and the target directory are cache mounts, kept between builds
# on the same machine; the binaries are copied out of the target directory in
# the same step, since a cache mount is not part of the image.
RUN --mount=type=cache,id=conclave-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=conclave-target,target=/src/target \
    cargo build --release --locked \
        --package conclave-homeserver --bin conclave-homeserver \
        --package conclave-client --bin conclave \
    && mkdir /binaries \
    && cp target/release/conclave-homeserver target/release/conclave /binaries/

# The two binaries at the root of an empty image: the one stage a runtime-only
# build replaces (`--build-context binaries=DIR`).
FROM scratch AS binaries
COPY --from=build /binaries/conclave-homeserver /binaries/conclave /

FROM debian:bookworm-slim AS runtime

# ca-certificates for TLS to services outside the cluster (OTLP, managed
# Redis); the binaries need nothing else beyond libc, libm and libgcc_s, which
# every Debian base has. The base scripts/container-images makes has
# ca-certificates already (so that a build needs no Debian mirror); Docker
# Hub's debian:bookworm-slim does not.
RUN if [ "$(dpkg-query --show --showformat='${Status}' ca-certificates 2>/dev/null)" \
        != "install ok installed" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A user named after the uid, so that tools show a name and HOME is the
# writable directory; the uid and gid are fixed, since Kubernetes'
# runAsUser/fsGroup and volume ownership name them by number.
RUN groupadd --gid 10001 conclave \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/conclave --no-create-home \
        --shell /usr/sbin/nologin conclave \
    && install --directory --owner 10001 --group 10001 --mode 0750 /var/lib/conclave

COPY --from=binaries /conclave-homeserver /conclave /usr/local/bin/

# VERSION is the workspace's (Cargo.toml), for the labels; it must be the
# binaries' own.
ARG VERSION
RUN version=$(conclave-homeserver --version) \
    && if [ "$version" != "conclave-homeserver ${VERSION}" ]; then \
        echo "error: --build-arg VERSION=${VERSION} but the binary says: $version" >&2; exit 1; \
    fi

# REVISION is the git commit built, SOURCE where the source lives; last, so
# that a new revision rebuilds no earlier layer.
ARG REVISION
ARG SOURCE=""
LABEL org.opencontainers.image.title="conclave-homeserver" \
      org.opencontainers.image.description="Conclave: a federated, end-to-end encrypted group messaging server on MLS (RFC 9420); with the conclave CLI for debugging" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
WORKDIR /var/lib/conclave
VOLUME ["/var/lib/conclave"]
# Client gRPC, federation gRPC, HTTP (/healthz, /readyz, /metrics).
EXPOSE 7400 7401 7480
# The server shuts down gracefully on SIGTERM ([shutdown] deadline_seconds);
# it installs its own handler, so it stops as PID 1 too.
STOPSIGNAL SIGTERM
ENTRYPOINT ["conclave-homeserver"]
CMD ["run"]
