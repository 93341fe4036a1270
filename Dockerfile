# syntax=docker/dockerfile:1
# One image for every Scrapifie process; the command picks the role:
#   docker run scrapifie worker --tier http|browser|stealth | sink | gateway | topics --create | migrate | tenants --add NAME
# Settings come from the environment (SCRAPIFIE_*, nested with "__"); see docker-compose.yml.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Chromium for the browser and stealth tiers: Debian's headless shell, the binary BrowserConfig
# launches by default (/usr/bin/chromium-headless-shell; Playwright downloads no browser here),
# and a font family so text renders with real metrics.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium-headless-shell fonts-liberation \
    && rm -rf /var/lib/apt/lists/*

# Only what the wheel is built from (pyproject's packages + the readme it names), so local state
# (.venv, .data, caches) never reaches the image even without a .dockerignore.
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY scrapifie ./scrapifie
COPY streams ./streams
COPY schemas ./schemas
COPY connectors ./connectors
# The same versions as `make` installs: the lock's pins as constraints (without the dev tools
# it also pins, and without its hashes, which pip cannot check for the local package).
RUN grep -E '^[A-Za-z0-9]' requirements.lock | sed 's/ \\$//' > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt . \
    && cd / && rm -rf /src /tmp/constraints.txt

# Unprivileged runtime user; /data holds the little local state a process keeps (Faust's datadir).
RUN groupadd --system --gid 10001 scrapifie \
    && useradd --system --uid 10001 --gid scrapifie --home-dir /app --create-home \
       --shell /usr/sbin/nologin scrapifie \
    && install -d -o scrapifie -g scrapifie /data

# Container defaults: listen on all interfaces (ports are published/scraped by name), JSON logs.
ENV SCRAPIFIE_DATA_DIR=/data \
    SCRAPIFIE_METRICS_HOST=0.0.0.0 \
    SCRAPIFIE_GATEWAY__HOST=0.0.0.0 \
    SCRAPIFIE_LOG_FORMAT=json

WORKDIR /app
USER scrapifie:scrapifie

# gateway (HTTP API and /metrics), worker metrics, sink metrics
EXPOSE 8080 9310 9311

ENTRYPOINT ["scrapifie"]
CMD ["--help"]
