# syntax=docker/dockerfile:1

# ---- build ----
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer that is rebuilt only when the manifests
# change: build them against placeholder sources, then drop those.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin auth-service \
    && rm -rf src

COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin auth-service \
    && strip target/release/auth-service

# ---- runtime ----
# distroless/cc: glibc and libgcc only (the binary links nothing else), no
# shell, no package manager; the nonroot variant runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /src/target/release/auth-service /app/auth-service
COPY config /app/config
ENV APP_ENV=docker
EXPOSE 5000 7070
# 65532 is the "nonroot" user of the distroless image.
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/auth-service", "healthcheck"]
ENTRYPOINT ["/app/auth-service"]
CMD ["serve"]
