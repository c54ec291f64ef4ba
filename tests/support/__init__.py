"""What the tests share besides their fixtures (tests/conftest.py): copies of the
repository driven through the CLI, derived rows and their oracle, servers of their own,
PgBouncer, the Neon stand-in."""
