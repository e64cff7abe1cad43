# Base images are build arguments, so images made elsewhere can stand in
# (scripts/offline-images.sh makes both from Debian's packages):
#   docker build --build-arg BUILD_IMAGE=... --build-arg RUNTIME_IMAGE=... .
ARG BUILD_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- build ----
FROM ${BUILD_IMAGE} AS build
WORKDIR /src

# Dependencies first, in a layer that is rebuilt only when the manifests
# change: build them against placeholder sources, then drop those. The
# manifest names a bench, so cargo wants its file to exist (an empty one).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs benches/micro.rs \
    && cargo build --release --locked --bin auth-service \
    && rm -rf src

COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin auth-service \
    && strip target/release/auth-service \
    && mkdir -p /out/data

# ---- runtime ----
# distroless/cc: glibc and libgcc only (the binary links nothing else), no
# shell, no package manager; the nonroot variant runs as uid 65532.
FROM ${RUNTIME_IMAGE}
WORKDIR /app
COPY --from=build /src/target/release/auth-service /app/auth-service
# No config/ beside it: the APP_ENV layers are built into the binary; mount
# files at /app/config (or name a directory with AUTH__CONFIG_DIR) to
# override them.
# Writable by the service's user: embedded storage's default data directory
# (AUTH__STORAGE__BACKEND=embedded; mount a volume here to keep it).
COPY --from=build --chown=65532:65532 /out/data /app/data
ENV APP_ENV=docker
EXPOSE 5000 7070
# 65532 is the "nonroot" user of the distroless image.
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/auth-service", "healthcheck"]
ENTRYPOINT ["/app/auth-service"]
CMD ["serve"]
