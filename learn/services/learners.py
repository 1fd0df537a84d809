"""A learner's own records: answers to the chapters' checks, and moving a browser
session's runs, collections and answers to the account it signs in to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction

from learn.models import (
    CheckAnswer,
    Collection,
    Run,
)

if TYPE_CHECKING:
    pass


def record_check_answer(
    owner: str, check_id: str, answer: str, *, correct: bool, run: Run | None = None
) -> CheckAnswer:
    """Keep one graded answer to a check (learn.checks) of ``owner`` (an Owner tag)."""
    return CheckAnswer.objects.create(
        owner=owner, check_id=check_id, answer=answer[:200], correct=correct, run=run
    )


def adopt_session(session_key: str, user: Any) -> int:
    """Move a browser session's runs, collections and check answers to ``user``'s account
    (``session:<key>`` → ``user:<id>``), all or nothing; the number of runs moved."""
    old, new = f"session:{session_key}", f"user:{user.pk}"
    with transaction.atomic():
        moved = Run.objects.filter(owner=old).update(owner=new)
        Collection.objects.filter(owner=old).update(owner=new)
        CheckAnswer.objects.filter(owner=old).update(owner=new)
    return moved
