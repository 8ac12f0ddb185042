# The MLflow tracking server with the PostgreSQL driver the official image does not ship.
ARG MLFLOW_VERSION=3.17.2
FROM ghcr.io/mlflow/mlflow:v${MLFLOW_VERSION}
RUN pip install --no-cache-dir "psycopg2-binary>=2.9"
