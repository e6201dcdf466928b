# postwatch in a container: non-root, SQLite in the /data volume, config mounted read-only at
# /etc/postwatch/postwatch.toml (see packaging/container/postwatch.toml and compose.yaml).
#   docker build -t postwatch .
#   docker run -d -p 8025:8025 -v postwatch-data:/data \
#     -v ./postwatch.toml:/etc/postwatch/postwatch.toml:ro postwatch
# Try it first, nothing to configure:  docker run --rm postwatch demo --fast
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/postwatch \
 && /opt/postwatch/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/postwatch/bin/python -m compileall -q /opt/postwatch/lib

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="postwatch" \
      org.opencontainers.image.description="Form intake that never loses a lead, and a watch on the mail path behind it" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"
RUN groupadd --system --gid 10001 postwatch \
 && useradd --system --uid 10001 --gid postwatch --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin postwatch \
 && install -d -o postwatch -g postwatch -m 0750 /data \
 && install -d -m 0755 /etc/postwatch
COPY --from=build /opt/postwatch /opt/postwatch
COPY packaging/container/postwatch.toml /etc/postwatch/postwatch.toml
ENV PATH=/opt/postwatch/bin:$PATH \
    POSTWATCH_CONFIG=/etc/postwatch/postwatch.toml \
    POSTWATCH_HEALTH_URL=http://127.0.0.1:8025/healthz \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# HTTP (intake, API, /healthz, /metrics); syslog from rsyslog/Vector (udp and tcp)
EXPOSE 8025 5514 5514/udp
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['POSTWATCH_HEALTH_URL'], timeout=4).status == 200 else 1)"]
ENTRYPOINT ["postwatch"]
CMD ["serve", "--config", "/etc/postwatch/postwatch.toml"]
