"""What a reviewer reads: ``make review``'s report of a change (:mod:`.report`) and
``schema.md`` (:mod:`.docs`)."""
