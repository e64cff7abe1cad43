# The stand-in for prom/prometheus: Debian's Prometheus (2.42). As in the
# official image, the TSDB lives in the working directory (/prometheus) and
# the configuration in /etc/prometheus, where the compose file mounts it.
ARG BASE=auth-offline/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
WORKDIR /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml"]
