# Tarn in a container: `docker compose up --build` (see compose.yaml) or
#   docker build -t tarn . && docker run -p 8080:8080 -v tarn-data:/data tarn
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tarn \
    && cp target/release/tarn /usr/local/bin/tarn

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/tarn /usr/local/bin/tarn
# Listen on all interfaces inside the container; the lake defaults to the /data volume.
ENV TARN_LISTEN=0.0.0.0:8080 \
    TARN_PG_LISTEN=0.0.0.0:5433 \
    TARN_LAKE=/data/lake
VOLUME ["/data"]
EXPOSE 8080 5433
# Healthy = ready for traffic (/readyz: storage answers, the write-ahead log is replayed);
# /healthz is liveness only.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=5 CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["tarn"]
CMD ["serve"]
