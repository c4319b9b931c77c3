# The scoreboard service: `docker build -t scoreboard .`, then
#   docker run -p 8000:8000 -v scoreboard-data:/data scoreboard            (embedded SQLite)
#   docker run -e SCOREBOARD_MONGODB_URI=... -e SCOREBOARD_JWT_SECRET=... scoreboard
#   docker run --rm -e SCOREBOARD_JWT_SECRET=... scoreboard token --sub alice
# Every setting is a SCOREBOARD_* variable (README.md, "Settings").

# Build stage: install the project and its dependencies from pyproject.toml into a venv.
# Every dependency ships manylinux wheels, so no compiler (and no apt) is needed.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/scoreboard
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY handlers ./handlers
COPY actors ./actors
RUN /opt/scoreboard/bin/pip install --no-cache-dir .

# Runtime stage: the venv only (no source tree, no build tools), run as a fixed non-root uid
# so Kubernetes' runAsNonRoot can check it.
FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/scoreboard/bin:$PATH \
    SCOREBOARD_HOST=0.0.0.0 \
    SCOREBOARD_PORT=8000 \
    SCOREBOARD_SQLITE_PATH=/data/scoreboard.db
RUN groupadd --system --gid 10001 scoreboard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin scoreboard \
    && mkdir /data \
    && chown 10001:10001 /data
COPY --from=build /opt/scoreboard /opt/scoreboard
USER 10001:10001
WORKDIR /data
# The embedded SQLite store lives here (unused when SCOREBOARD_MONGODB_URI is set).
VOLUME ["/data"]
EXPOSE 8000
# /healthz with the stdlib (slim has no curl), past any proxy variables; follows SCOREBOARD_PORT
# and SCOREBOARD_TLS_CERT (flags given as CMD arguments are not seen here).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as u; tls = bool(os.environ.get('SCOREBOARD_TLS_CERT')); ctx = ssl._create_unverified_context() if tls else None; u.build_opener(u.ProxyHandler({}), u.HTTPSHandler(context=ctx)).open(('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('SCOREBOARD_PORT', '8000') + '/healthz', timeout=2)"]
# Exec form: python is PID 1 and gets SIGTERM itself (graceful shutdown, README "Operating it").
ENTRYPOINT ["python", "-m", "server"]
CMD []
