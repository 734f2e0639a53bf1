# syntax=docker/dockerfile:1
# The zenrelay image: `zenrelay serve`, `sim`, `demo` or `check-config`.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin zenrelay \
 && cp target/release/zenrelay /usr/local/bin/zenrelay

FROM debian:bookworm-slim
# curl is for health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home zenrelay
COPY --from=build /usr/local/bin/zenrelay /usr/local/bin/zenrelay
COPY config /etc/zenrelay
USER zenrelay
EXPOSE 8080 9090
ENTRYPOINT ["zenrelay"]
CMD ["serve", "--config", "/etc/zenrelay/compose.toml"]
