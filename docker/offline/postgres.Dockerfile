# The stand-in for postgres:15-alpine: Debian's PostgreSQL 15, with the
# part of the official image's interface the compose file uses
# (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB; data in
# /var/lib/postgresql/data; pg_isready for the healthcheck).
ARG BASE=auth-offline/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
# No cluster from the package's postinst: the entrypoint makes one in PGDATA.
RUN mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
# SIGINT is PostgreSQL's "fast" shutdown, as in the official image.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
