"""The operations revisions call (``op.create_policy``, ``op.ensure_role``...), one
module per kind of database object: each registers its operations with Alembic, says
how they run (only SQL, so ``--sql`` renders them) and how a revision spells them."""
