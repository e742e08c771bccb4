# timesink image for docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/timesink /usr/local/bin/timesink
COPY topics.yaml /etc/timesink/topics.yaml
ENTRYPOINT ["timesink"]
CMD ["run"]
