# syntax=docker/dockerfile:1.7
# One image per service: docker build --build-arg SERVICE=projects -t baton/projects .
# The same image runs the API (default command) and the worker (`python -m <service>.worker`).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
ARG UV_VERSION=0.9.7
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
# Built where the runtime stage runs it: uv writes the virtualenv's absolute path into its launchers'
# shebangs (bin/uvicorn starts with #!/app/.venv/bin/python), so it cannot be moved.
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
COPY tools ./tools
# Only this service and what it depends on (libs/shared); proves no service imports another.
RUN uv sync --locked --no-dev --no-editable --package "${SERVICE}" \
 && cp -r "services/${SERVICE}/migrations" /app/.venv/migrations

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    BATON_SERVICE=${SERVICE} BATON_MIGRATIONS_DIR=/app/.venv/migrations HOME=/tmp
RUN groupadd --system --gid 10001 baton \
 && useradd --system --uid 10001 --gid baton --no-create-home --shell /usr/sbin/nologin baton
COPY --from=build --chown=root:root /app/.venv /app/.venv
WORKDIR /app
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# uvicorn handles SIGTERM itself: stops accepting, lets in-flight requests finish (graceful timeout).
CMD ["sh", "-c", "exec uvicorn \"${BATON_SERVICE}.main:build_app\" --factory --host 0.0.0.0 --port 8000 --no-access-log --timeout-graceful-shutdown 20"]
