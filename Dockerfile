# Switchboard's production image: Python 3.11, Node with the pinned Claude Code CLI, a non-root user, data in /data.
#
#   docker build -t switchboard .
#   docker run -d --name switchboard -v switchboard-data:/data -e TELEGRAM_BOT_TOKEN=... switchboard
#
# Configuration: /data/switchboard.toml (the working directory) is read when present; or point
# SWITCHBOARD_CONFIG at a mounted file, or use SWITCHBOARD_* variables. Log the Claude Code CLI in once, inside the container, as this user:
#   docker exec -it switchboard claude login
# Its credentials live under /data/.claude (CLAUDE_CONFIG_DIR), so they survive a rebuild of the image.
FROM python:3.11-slim

ARG CLAUDE_CODE_VERSION=2.1.332
ARG CODEX_VERSION=0.169.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DISABLE_AUTOUPDATER=1

# Node and npm from Debian (no third-party repository); tini as PID 1 reaps the workers' orphaned children and
# forwards SIGTERM; tzdata for pulse.timezone; git for coding workers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm tini tzdata ca-certificates git \
    && npm install -g --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
        "@openai/codex@${CODEX_VERSION}" \
    && npm cache clean --force \
    && rm -rf /var/lib/apt/lists/* \
    && claude --version

WORKDIR /opt/switchboard
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
COPY memory ./memory
COPY prompts ./prompts
RUN pip install . && switchboard --help > /dev/null

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin switchboard \
    && mkdir -p /data \
    && chown switchboard:switchboard /data

USER switchboard
ENV SWITCHBOARD_HOME=/data \
    CLAUDE_CONFIG_DIR=/data/.claude
WORKDIR /data
VOLUME /data

# `status --check` fails unless the engine inside this container renewed its liveness mark recently (every 30 s)
# and the data folder and database are usable.
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 CMD ["switchboard", "status", "--check", "--json"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["switchboard", "run", "--no-console"]
