# Upload Pools: one image for API nodes, workers and the migrate one-shot.
#   docker build -t uploadpools .
#   docker run ... uploadpools                      # API only (serve --no-engine)
#   docker run ... uploadpools uploadpools worker   # an engine process
# See docs/deploy.md and deploy/compose.yaml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# PyAV's wheel carries its own FFmpeg libraries: no system packages are needed.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \
    && useradd --system --uid 10001 --user-group --home-dir /data --create-home uploadpools

USER uploadpools
ENV UPLOADPOOLS_ENV=production \
    UPLOADPOOLS_DATA_DIR=/data \
    UPLOADPOOLS_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8000 9100

CMD ["uploadpools", "serve", "--no-engine", "--host", "0.0.0.0", "--port", "8000"]
