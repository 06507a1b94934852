# localhost/rust:1.94-slim-bookworm, made by scripts/container-images: Debian bookworm
# (the local localhost/debian:bookworm-slim) with a C compiler and linker for
# the crates that build C (ring, libsqlite3-sys) and this host's Rust toolchain,
# given as the build context "toolchain" (`rustc --print sysroot`), since no
# registry is reachable to pull rust:1.94-slim-bookworm. Laid out as the official image
# is: toolchain and cargo home under /usr/local.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

# "toolchain" is a build context, not a stage (hadolint cannot know).
# hadolint ignore=DL3022
COPY --from=toolchain / /usr/local/rust/

ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

RUN rustc --version && cargo --version
