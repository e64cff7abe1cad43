# Stands in for Jaeger, which Debian does not package: an OTLP/gRPC
# receiver on :4317 that accepts trace exports and logs how many arrived,
# so the stack's tracing path is exercised end to end (no UI, no storage).
ARG BASE=auth-offline/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-grpcio \
    && rm -rf /var/lib/apt/lists/*
COPY otlp_sink.py /usr/local/bin/otlp_sink.py
USER 65534:65534
EXPOSE 4317
ENTRYPOINT ["python3", "-u", "/usr/local/bin/otlp_sink.py"]
