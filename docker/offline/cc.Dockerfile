# The stand-in for gcr.io/distroless/cc-debian12:nonroot, from Debian's
# packages: glibc and libgcc (all the service links), the NSS and time zone
# data they read, a nonroot user (65532) and nothing else — no shell, no
# package manager.
ARG BASE=auth-offline/debian:bookworm
FROM ${BASE} AS packages
WORKDIR /tmp/debs
RUN apt-get update \
    && apt-get download libc6 libgcc-s1 netbase tzdata \
    && mkdir /rootfs \
    && for deb in ./*.deb; do dpkg-deb -x "$deb" /rootfs; done \
    && rm -rf /rootfs/usr/share/doc /rootfs/usr/share/lintian /rootfs/usr/share/locale \
    && mkdir -p /rootfs/etc /rootfs/tmp /rootfs/home/nonroot \
    && chmod 1777 /rootfs/tmp \
    && chown 65532:65532 /rootfs/home/nonroot \
    && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
    && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
    && printf 'passwd: files\ngroup: files\nhosts: files dns\n' > /rootfs/etc/nsswitch.conf \
    && rm -rf /var/lib/apt/lists/*

FROM scratch
COPY --from=packages /rootfs /
USER 65532:65532
