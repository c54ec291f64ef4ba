"""Changes to live tables in their online forms: concurrent indexes, NOT VALID then
VALIDATE, brief locks (:mod:`.forms`), UNIQUE and primary keys (:mod:`.unique`),
column changes (:mod:`.columns`) and batched updates (:mod:`.backfill`)."""
