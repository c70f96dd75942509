# syntax=docker/dockerfile:1
# Build a wheel in one stage, install it into a clean runtime image in the next.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY omni_store ./omni_store
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /dist

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 omni
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
USER omni
WORKDIR /home/omni
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
# DATABASE_URL and OMNI_STORE_JWT_SECRET must be set; migrations run on start.
# OMNI_STORE_WORKERS=N serves from N processes: one per core the container may use.
CMD ["omni-store", "serve", "--host", "0.0.0.0", "--port", "8000"]
