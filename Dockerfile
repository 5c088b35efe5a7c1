# Multi-stage build: a release binary on Debian 12, then a small non-root runtime image.
#
#   docker build -t wishcast .
#   docker run --network host wishcast
#   docker run -p 8080:8080 -p 8189-8190:8189-8190/udp \
#     -e WISHCAST_MEDIA__SHARDS=2 -e WISHCAST_MEDIA__PUBLIC_IPS='["203.0.113.7"]' wishcast
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY examples examples
COPY benches benches
COPY config config
RUN cargo build --release --locked --bin wishcast

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin wishcast
COPY --from=build /src/target/release/wishcast /usr/local/bin/wishcast
COPY config/wishcast.example.toml /etc/wishcast/wishcast.example.toml
USER wishcast
# HTTP signalling (HTTPS and HTTP/3 on UDP too when TLS is on), and one UDP port per shard
# from media.udp_base_port: set media.shards to match the range you publish.
EXPOSE 8080/tcp 8080/udp
EXPOSE 8189-8204/udp
VOLUME ["/etc/wishcast"]
# Same configuration sources as the server: file (if mounted), WISHCAST_* environment.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/wishcast", "--healthcheck"]
ENTRYPOINT ["/usr/local/bin/wishcast"]
