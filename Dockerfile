# The `inv` image: the CLI with every backend's client (the `kafka` extra pulls in the
# postgres one) and the HTTP API (`api`: FastAPI, Uvicorn, limits, prometheus-client),
# run as a non-root user.  Its default command is the API server, `inv serve`, on port
# 8000 of every interface; docker-compose.yml builds it for `inv init`, the workers and
# the API; `docker run --rm IMAGE list --format json` runs any other command.
#
# Two stages: the first builds the wheel and installs it into a virtualenv, the second
# copies only that virtualenv onto a fresh slim image (no source tree, no pip cache).
# psycopg[binary] and confluent-kafka ship manylinux wheels, so no compiler is needed.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# What setuptools needs to build the distribution: pyproject.toml, the readme it names,
# and the two packages it finds (inventory_cli*, backends*).
COPY pyproject.toml README.md ./
COPY backends/ backends/
COPY inventory_cli/ inventory_cli/
RUN python -m venv /opt/inv \
    && /opt/inv/bin/pip install --no-cache-dir ".[kafka,api]"

FROM python:3.11-slim
ENV PATH=/opt/inv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/inv /opt/inv
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin inv
USER inv
WORKDIR /home/inv
ENTRYPOINT ["inv"]
EXPOSE 8000
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
