"""Neon: its API (:mod:`.client`), the ``neon-branch`` command (:mod:`.branches`), and
the restore point a deploy makes before a revision destroys data (:mod:`.restore_point`),
with the durations they read alike (:mod:`.settings`)."""
