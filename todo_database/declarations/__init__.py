"""What the models declare for row-level security, resolved into policies, grants and
functions and checked (:mod:`.row_security`); which grantees the project manages
(:mod:`.grantees`); whether a SECURITY DEFINER function could run an injection's code
(:mod:`.definer_safety`). No database is needed here."""
