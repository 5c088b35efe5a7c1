# Multi-stage build: a release binary on Debian 12, then a small non-root runtime image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY examples examples
COPY config config
RUN cargo build --release --locked --bin wishcast

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin wishcast
COPY --from=build /src/target/release/wishcast /usr/local/bin/wishcast
COPY config/wishcast.example.toml /etc/wishcast/wishcast.example.toml
USER wishcast
# HTTP signalling, and one UDP port per shard from media.udp_base_port.
EXPOSE 8080/tcp
EXPOSE 8189-8204/udp
VOLUME ["/etc/wishcast"]
ENTRYPOINT ["/usr/local/bin/wishcast"]
