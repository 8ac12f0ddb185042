"""Serving benchmark: ``python -m bench.serving`` (``make bench``).

Trains the reference model (palmerpenguins; median / most-frequent imputation, scaling, one-hot,
HistGradientBoosting with 300 trees), serves it on 127.0.0.1 with one worker through
``mlservice serve`` and ``mlflow models serve --env-manager local`` (default threads and
``OMP_NUM_THREADS=1``) beside a bare FastAPI echo (the HTTP floor), drives each with wrk, and
writes one table to ``bench/results/serving.{json,md}`` with every ratio against the floor of the
same run, the acceptance checks, in-process rows/s and where a request's time goes (each step
timed on its own).
"""
