"""Soak test: ``python -m bench.soak [--duration 600]`` (``make soak``).

Trains a small penguins bundle (or takes ``--bundle``), serves it with ``mlservice serve`` on
127.0.0.1, drives it with wrk at a steady rate for the whole duration, samples the server's
resident memory and open file descriptors every few seconds from ``/proc``, and writes
``bench/results/soak.{json,md}``. Pass: zero errors, p99 within budget (500 ms), RSS growth
under 10 % between the first and the last sample of the measured phase (after a warm-up), file
descriptors flat, and the server still ready at the end.
"""
