# Delight: a multi-stage build that runs `delight serve` as a non-root user.
# Without DELIGHT_DATABASE_URL / DELIGHT_REDIS_URL it starts embedded servers under /data.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/delight
COPY requirements.lock ./
RUN /opt/delight/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY service ./service
COPY migrations ./migrations
RUN /opt/delight/bin/pip install --no-deps .

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 delight \
    && mkdir -p /data /app \
    && chown delight:delight /data
COPY --from=build /opt/delight /opt/delight
COPY --chown=delight:delight rules /app/rules
USER delight
WORKDIR /app
ENV PATH=/opt/delight/bin:$PATH \
    DELIGHT_RULES_DIR=/app/rules \
    DELIGHT_DATA_DIR=/data \
    DELIGHT_LOG_JSON=true \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live').status != 200)"
ENTRYPOINT ["delight"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
