# syntax=docker/dockerfile:1
# One image for every tablesync service: the command picks it, e.g.
#   docker run IMAGE run capture --side bc | run apply | run coordinator | run admin
#   docker run IMAGE emulator bc | mappings load --yes | full-sync --wait
# docker-compose.yml runs them all together.

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY services ./services
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TABLESYNC_LOG_FORMAT=json
RUN useradd --system --uid 10001 --user-group --home-dir /home/tablesync --create-home tablesync
COPY --from=wheel /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER 10001:10001
WORKDIR /home/tablesync
ENTRYPOINT ["tablesync"]
CMD ["--help"]
