"""Running revisions safely (the deploy lock, bounded locks, one transaction per
revision: :mod:`.runner`), the connection env.py migrates through (:mod:`.connect`),
which database that is (:mod:`.database`), and the real ``alembic`` CLI for tools
(:mod:`.cli`)."""
