"""Service-level behaviour that HTTP tests cannot reach directly: deadlock retry."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import OperationalError, transaction

from tracking import services


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _failure(sqlstate: str) -> OperationalError:
    exc = OperationalError("simulated")
    exc.__cause__ = _PgError(sqlstate)
    return exc


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_with_retry__deadlock_then_success__retried_transparently(sqlstate):
    # Given an operation that deadlocks twice, then succeeds
    operation = mock.Mock(side_effect=[_failure(sqlstate), _failure(sqlstate), "stored"])
    # When it runs with retry (outside any transaction)
    with mock.patch.object(services.time, "sleep"):
        result = services._with_retry(operation)
    # Then the caller only sees the success
    assert result == "stored"
    assert operation.call_count == 3


def test_with_retry__other_error__raised_at_once():
    operation = mock.Mock(side_effect=_failure("23505"))
    with pytest.raises(OperationalError):
        services._with_retry(operation)
    assert operation.call_count == 1


def test_with_retry__persistent_deadlock__raised_after_max_attempts():
    operation = mock.Mock(side_effect=_failure("40P01"))
    with mock.patch.object(services.time, "sleep"), pytest.raises(OperationalError):
        services._with_retry(operation)
    assert operation.call_count == services.MAX_ATTEMPTS


@pytest.mark.django_db
def test_with_retry__inside_outer_transaction__not_retried():
    # Given an outer transaction (which a failure aborts, so a retry inside it cannot work)
    operation = mock.Mock(side_effect=_failure("40P01"))
    # When the operation deadlocks
    with pytest.raises(OperationalError), transaction.atomic():
        services._with_retry(operation)
    # Then the error propagates to the owner of the transaction
    assert operation.call_count == 1
