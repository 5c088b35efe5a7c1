# Multi-stage build: a release binary on Debian 12, then a small non-root runtime image.
#
#   docker build -t wishcast .
#   docker run --network host wishcast
#   docker run -p 8080:8080 -p 8189-8190:8189-8190/udp \
#     -e WISHCAST_MEDIA__SHARDS=2 -e WISHCAST_MEDIA__PUBLIC_IPS='["203.0.113.7"]' wishcast
FROM rust:1-bookworm AS build
# The image has libssl-dev and pkg-config, which DTLS on OpenSSL builds against.
WORKDIR /src
# The release profile keeps line tables for profiling; in the image they would be most of the
# binary's size.
ENV CARGO_PROFILE_RELEASE_DEBUG=0
# Dependencies first, built against stub targets, so a source change does not rebuild them.
# The [[bench]] entries in Cargo.toml need their files to exist.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/fanout.rs && echo 'fn main() {}' > benches/signalling.rs \
    && echo 'fn main() {}' > benches/dtls.rs \
    && cargo build --release --locked --bin wishcast \
    && rm -rf src benches
COPY src src
COPY benches benches
# COPY keeps the files' modification times, which may be older than the stubs' build: touch
# the crate roots so cargo rebuilds the crate itself.
RUN touch src/lib.rs src/main.rs && cargo build --release --locked --bin wishcast

FROM debian:bookworm-slim
# DTLS runs on the system OpenSSL (libssl3), which the slim image lacks.
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --user-group --no-log-init --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin wishcast
COPY --from=build /src/target/release/wishcast /usr/local/bin/wishcast
# Every option with its default; mount your own file over it. The server (default arguments)
# and the health check both read it, so they agree on the listener. No VOLUME: this is
# configuration, not state, and a VOLUME would leave an anonymous volume behind every container.
COPY config/wishcast.example.toml /etc/wishcast/wishcast.toml
# Numeric, so orchestrators can verify the user is not root (Kubernetes runAsNonRoot).
USER 10001:10001
# The server and the health check both take the file from WISHCAST_CONFIG, so flags given to
# `docker run` add to it rather than replace it.
ENV WISHCAST_CONFIG=/etc/wishcast/wishcast.toml
# HTTP signalling (HTTPS and HTTP/3 on UDP too when TLS is on), one UDP port per shard
# from media.udp_base_port (set media.shards to match the range you publish), and the one
# ICE-TCP port (media.tcp_port, by default the number of udp_base_port).
EXPOSE 8080/tcp 8080/udp
EXPOSE 8189-8204/udp
EXPOSE 8189/tcp
# Same configuration sources as the server: the file above and WISHCAST_* environment.
# Listener flags given to `docker run` are not seen here: set the listener in the file or the
# environment.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/wishcast", "--healthcheck"]
ENTRYPOINT ["/usr/local/bin/wishcast"]
