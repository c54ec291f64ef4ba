"""Neon: its API (:mod:`.client`, also the ``neon-branch`` command), and the restore
point a deploy makes before a revision destroys data (:mod:`.restore_point`)."""
