"""Benchmarks of the schema repository: ``make bench`` (``python -m tests.benchmarks``).

One module per benchmark, each exposing ``BENCHMARK`` (a :class:`common.Benchmark`:
a name for ``--only``, a title, and a ``run(server, options)`` returning tables);
``__main__`` runs them in order. :mod:`tests.benchmarks.common` holds what they share:
timing and medians, table printing, throwaway ``todo_test_bench_*`` databases (always
dropped), and subprocess environments pointed at one database.

They run on the embedded server unless ``BENCH_DATABASE_URL`` names an admin URL of
another. Progress goes to stderr, figures to stdout. Nothing here asserts on a timing:
a target missed is printed as MISS, and the exit status is non-zero only when a
benchmark could not measure at all.

To add a benchmark: write ``tests/benchmarks/<name>.py`` with a ``BENCHMARK`` and add
it to ``BENCHMARKS`` in ``__main__``.
"""
