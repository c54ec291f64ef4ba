"""Functions as ``pg_proc`` holds them, of a schema (:mod:`.schemas`) and no
extension's: :func:`read_routines` reads every function and procedure with all the
project reads of it (the docs show it whole); :func:`read_functions` gives
autogenerate the functions alone, as :class:`Held`, to compare with the declarations'
twins; :func:`read_definers` and :func:`read_names` give
:mod:`todo_database.declarations.definer_safety` what it checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from models.security import ROLES, Function
from todo_database.catalog.schemas import CURRENT
from todo_database.declarations.definer_safety import Definer, Names
from todo_database.declarations.grantees import managed_grantee

VOLATILITY = {"i": "IMMUTABLE", "s": "STABLE", "v": "VOLATILE"}


@dataclass(frozen=True)
class Shape:
    """A function as ``pg_proc`` describes it: what decides whether two are the same."""

    arguments: str
    result: str
    body: str
    language: str
    volatility: str
    security_definer: bool
    settings: tuple[str, ...]


@dataclass(frozen=True)
class Held:
    """A function of the database: its shape, owner, and who may execute it."""

    name: str
    identity: str
    shape: Shape
    owner: str
    executors: frozenset[str]

    def declaration(self, schema: str = "public") -> Function:
        """The function as a declaration, for an operation's reverse."""
        search_path = None
        for setting in self.shape.settings:
            if setting.startswith("search_path="):
                search_path = setting.removeprefix("search_path=").strip('"')
        return Function(
            name=self.name,
            returns=self.shape.result,
            body=self.shape.body,
            arguments=self.shape.arguments,
            language=self.shape.language,  # type: ignore[arg-type]
            volatility=VOLATILITY[self.shape.volatility],  # type: ignore[arg-type]
            security_definer=self.shape.security_definer,
            search_path=search_path,
            owner=self.owner,
            # The owner may always execute; it is not one of the declared executors.
            executors=tuple(sorted(self.executors - {self.owner})),
            schema=schema,
        )


@dataclass(frozen=True)
class Routine:
    """A function or procedure of a schema: what ``pg_proc`` says of it."""

    name: str
    #: Its identity arguments (``pg_get_function_identity_arguments``).
    identity: str
    #: ``f`` (function) or ``p`` (procedure).
    kind: str
    #: ``schema.name(arguments)``, the arguments as PostgreSQL prints them (defaults too).
    signature: str
    shape: Shape
    owner: str
    #: The managed grantees that may execute it (the owner when it is one).
    executors: frozenset[str]
    #: Every grantee that may execute it, ``public`` and the owner included.
    grantees: frozenset[str]
    #: The policies whose expressions call it: (table, policy), in order.
    policies: tuple[tuple[str, str], ...]

    def held(self) -> Held:
        return Held(self.name, self.identity, self.shape, self.owner, self.executors)


# An extension's functions belong to the extension, not to this schema's design.
# A policy calling a function twice (USING and WITH CHECK) depends on it twice.
_ROUTINES = f"""
    SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prokind::text,
           quote_ident(n.nspname) || '.' || quote_ident(p.proname)
               || '(' || pg_get_function_arguments(p.oid) || ')',
           pg_get_function_arguments(p.oid), coalesce(pg_get_function_result(p.oid), ''),
           p.prosrc, l.lanname, p.provolatile::text, p.prosecdef, coalesce(p.proconfig, '{{}}'),
           pg_get_userbyid(p.proowner),
           ARRAY(SELECT coalesce(g.rolname::text, 'public')
                 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
                 LEFT JOIN pg_roles g ON g.oid = x.grantee
                 WHERE x.privilege_type = 'EXECUTE'
                   AND {managed_grantee("x.grantee", "p.proowner")}),
           ARRAY(SELECT coalesce(g.rolname::text, 'public')
                 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
                 LEFT JOIN pg_roles g ON g.oid = x.grantee
                 WHERE x.privilege_type = 'EXECUTE'),
           (SELECT coalesce(json_agg(json_build_array(c.relname, pol.polname)
                                     ORDER BY c.relname, pol.polname), '[]')
            FROM (SELECT DISTINCT d.objid FROM pg_depend d
                  WHERE d.classid = 'pg_policy'::regclass
                    AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid) called
            JOIN pg_policy pol ON pol.oid = called.objid
            JOIN pg_class c ON c.oid = pol.polrelid)
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_language l ON l.oid = p.prolang
    WHERE p.pronamespace = %(schema)s AND p.prokind IN ('f', 'p')
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
"""


def read_routines(connection: Connection, schema: str = CURRENT) -> list[Routine]:
    """The functions and procedures of `schema` that no extension brought."""
    oid = connection.exec_driver_sql(f"SELECT ({schema})::oid").scalar()
    found = []
    for (
        name,
        identity,
        kind,
        signature,
        arguments,
        result,
        body,
        language,
        volatility,
        definer,
        settings,
        owner,
        executors,
        grantees,
        policies,
    ) in connection.exec_driver_sql(_ROUTINES, {"schema": oid, "roles": list(ROLES)}):
        shape = Shape(arguments, result, body, language, volatility, definer, tuple(settings))
        found.append(
            Routine(
                name,
                identity,
                kind,
                signature,
                shape,
                owner,
                frozenset(executors),
                frozenset(grantees),
                tuple((table, policy) for table, policy in policies),
            )
        )
    return found


def read_functions(connection: Connection, schema: str) -> dict[tuple[str, str], Held]:
    """The functions (not procedures) of `schema`, by (name, identity arguments)."""
    return {
        (routine.name, routine.identity): routine.held()
        for routine in read_routines(connection, schema)
        if routine.kind == "f"
    }


# --- SECURITY DEFINER functions, for :mod:`todo_database.declarations.definer_safety` ---

#: The SECURITY DEFINER functions to look at: those of a schema, or
#: those of given oids (`where`, SQL over ``p``).
_DEFINERS = """
    SELECT p.oid,
           -- a twin the comparison made in pg_temp is named as the function it stands for
           CASE WHEN n.oid = pg_my_temp_schema() THEN 'public' ELSE n.nspname END
               || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           l.lanname, p.prosrc, p.prosqlbody IS NOT NULL, coalesce(p.proconfig, '{{}}')
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_language l ON l.oid = p.prolang
    WHERE p.prosecdef AND ({where})
"""
#: Relations and types by name, and whether pg_catalog holds one of that name.
_NAMES = """
    SELECT c.relname::text, c.relnamespace = 'pg_catalog'::regnamespace FROM pg_class c
    WHERE c.relnamespace <> 'pg_toast'::regnamespace
    UNION ALL
    SELECT t.typname::text, t.typnamespace = 'pg_catalog'::regnamespace FROM pg_type t
    WHERE t.typtype <> 'c' OR t.typnamespace = 'pg_catalog'::regnamespace
"""
#: Schemas in which some role other than the owner (or a superuser) may create objects.
_OPEN_SCHEMAS = """
    SELECT n.nspname FROM pg_namespace n
    CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
    WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner
      AND NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.grantee), false)
"""


def read_definers(connection: Connection, where: str, **params: object) -> list[Definer]:
    """The SECURITY DEFINER functions `where` (SQL over ``p``, with `params`) picks."""
    return [
        Definer(signature, language, body, bool(standard), tuple(settings))
        for _, signature, language, body, standard, settings in connection.exec_driver_sql(
            _DEFINERS.format(where=where), params
        )
    ]


def read_names(connection: Connection) -> Names:
    """The names relations and types have, in pg_catalog and elsewhere, and the schemas
    others than their owner may create objects in."""
    in_catalog: set[str] = set()
    elsewhere: set[str] = set()
    for name, catalog_holds in connection.exec_driver_sql(_NAMES):
        (in_catalog if catalog_holds else elsewhere).add(str(name))
    open_schemas = frozenset(connection.exec_driver_sql(_OPEN_SCHEMAS).scalars())
    return Names(frozenset(in_catalog), frozenset(elsewhere), open_schemas)
