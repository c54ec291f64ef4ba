"""The derived tests prove sharing on a schema that shares, and go red on sharing broken
by hand: proven through the front door.

A throwaway copy of the repository gets the shared-list models a new user writes
(``tests/support/shared_lists.py``: a list shared with members at three levels, the membership
table keyed by ``(list_id, user_id)``, tasks owned through the list and comments two
levels down). ``alembic revision --autogenerate`` writes them with the real template
and hooks and ``upgrade head`` runs them; the copy's own derived test modules run,
unchanged, against the test server. Then two sharing policies are broken in the
models (the list readable by members of any list; a membership any user may add for
themselves) and the same modules must fail, naming those two tables and no other.
Last, the modules must have passed unbroken.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import NewDatabase
from tests.support.evolution import DERIVED as OWNED_DERIVED
from tests.support.evolution import Project, failed_tests, with_users
from tests.support.shared_lists import add_shared_lists

pytestmark = pytest.mark.slow

#: The copy's own derived test modules, run unchanged.
DERIVED = (*OWNED_DERIVED, "tests/isolation/test_isolation_sharing.py")
#: The tables the shared-list models add.
SHARED_TABLES = {"shared_list", "shared_list_member", "list_task", "task_comment"}

#: The list readable by whoever is a member of any list.
ANY_MEMBER = (
    'Policy("todo_app_select_any_member", "SELECT", (APP_ROLE,), '
    'using="(SELECT public.verified_user_id()) IN '
    '(SELECT m.user_id FROM public.shared_list_member m)")'
)
#: A membership any signed-in user may add for themselves, to any list.
JOIN_ANY = (
    'Policy("todo_app_join_any_list", "INSERT", (APP_ROLE,), '
    'with_check="shared_list_member.user_id = (SELECT public.verified_user_id())")'
)
#: What the catalog lint would say of them otherwise: the isolation tests are the point.
BROKEN_LINTS = 'lint_acknowledged={"owner-column": "test: broken on purpose"}'


def break_sharing(p: Project) -> None:
    path = "models/shared_lists.py"
    p.replace(
        path,
        '{"info": {ROW_SECURITY: shared_with("shared_list_member", owner="user_id")}},',
        '{"info": {ROW_SECURITY: shared_with("shared_list_member", owner="user_id") '
        f"+ RowSecurity(policies=({ANY_MEMBER},), {BROKEN_LINTS})}}}},",
    )
    p.replace(
        path,
        '                    managers=("manager",),\n                )\n',
        '                    managers=("manager",),\n                )\n'
        f"                + RowSecurity(policies=({JOIN_ANY},))\n",
    )
    p.replace(
        path,
        "from models.security import ROW_SECURITY, member_of, owned_through, shared_with",
        "from models.security import (\n    APP_ROLE, ROW_SECURITY, Policy, RowSecurity, "
        "member_of, owned_through, shared_with\n)",
    )


def tables_named(failures: list[str]) -> set[str]:
    """The shared-list tables the failed tests' ids name (``[todo_app-<table>...]``)."""
    return {
        table
        for failure in failures
        for table in re.findall(r"\[todo_app-([a-z_]+)[\]-]", failure)
        if table in SHARED_TABLES
    }


def test_the_derived_tests_prove_sharing_and_fail_on_broken_sharing(
    tmp_path: Path, new_database: NewDatabase, head_template: str, admin_url: URL
) -> None:
    project = with_users(tmp_path / "project", new_database(template=head_template), "ada")
    add_shared_lists(project)
    project.succeed(["revision", "--autogenerate", "-m", "shared lists"], ["upgrade", "head"])
    project.succeed(["check"])

    derived = project.pytest(admin_url, "-v", *DERIVED)
    unbroken = failed_tests(derived.stdout)
    for table in SHARED_TABLES:
        assert f"todo_app-{table}" in derived.stdout, f"no derived test names {table}"
    unbroken_said = derived.stdout
    assert "test_sharing_does_what_the_declarations_say PASSED" in unbroken_said, unbroken_said[
        -8000:
    ]

    break_sharing(project)
    project.succeed(["revision", "--autogenerate", "-m", "broken sharing"], ["upgrade", "head"])
    broken = project.pytest(admin_url, *DERIVED)
    failures = sorted(set(failed_tests(broken.stdout)) - set(unbroken))
    assert broken.returncode != 0, broken.stdout[-3000:]
    assert tables_named(failures) == {"shared_list", "shared_list_member"}, failures
    # The property test may find a break too (hypothesis searches, and need not find
    # it in a given run); when it does, its report names a broken table.
    searching = (
        "tests/isolation/test_isolation_properties.py::test_sharing_does_what_the_declarations_say"
    )
    if searching in failures:
        report = broken.stdout.split(" test_sharing_does_what_the_declarations_say ", 1)[-1]
        assert re.search(r"\bshared_list(_member)?\b", report.split("\n____", 1)[0]), report
    elsewhere = [f for f in failures if not tables_named([f]) and f != searching]
    assert elsewhere == [], f"failures that name neither broken table: {elsewhere}"
    said = {
        "shared_list": "test_a_non_member_sees_nothing_of_a_shared_row",
        "shared_list_member": "test_nobody_adds_themselves_or_raises_their_own_level",
    }
    for table, test in said.items():
        assert tables_named([f for f in failures if test in f]) == {table}, failures

    # Last, so that the broken policies are proven red whatever the unbroken run says.
    assert derived.returncode == 0, "\n".join(unbroken) + derived.stdout[-6000:]
