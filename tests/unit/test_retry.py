"""When a record that did not sync is tried again, and when it is given up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.effects import DueRecord
from tablesync.core.fieldmap import Mapped, Unresolved
from tablesync.core.mappings import FieldMapping, Lookup
from tablesync.core.retry import (
    NotSynced,
    RetryPolicy,
    backoff,
    listing,
    same_failure,
    waiting_for,
)
from tests.strategies import due_records, failure_messages, retry_policies

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
POLICY = RetryPolicy(skip_after_failures=3, backoff_s=2.0, backoff_max_s=60.0)
_statuses: st.SearchStrategy[NotSynced] = st.sampled_from(["pending", "failed", "skipped"])


def _due(status: str, message: str, attempts: int = 1, same: int = 1) -> DueRecord:
    return DueRecord("CUSTOMER", "bc", "c1", status, message, attempts, same, b"")


def test_a_failure_repeats_though_business_central_numbers_each_response() -> None:
    first = "Customer 10000 already exists.  CorrelationId:  5d0e2a4c-9a3b-4f5e-8c1d-2b3a4c5d6e7f."
    again = "Customer 10000 already exists.  CorrelationId:  0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011."
    assert same_failure(first, again)
    assert not same_failure(first, "Customer 10001 already exists.")


@given(failure_messages(), failure_messages())
def test_only_the_correlation_id_is_ignored(a: str, b: str) -> None:
    def text(m: str) -> str:
        return m.split("  CorrelationId:", maxsplit=1)[0]

    assert same_failure(a, b) == (text(a) == text(b))


def test_a_first_failure_is_retried_after_the_first_delay() -> None:
    listed = listing(None, "failed", "boom", NOW, POLICY)
    assert (listed.status, listed.attempts, listed.same_failures) == ("failed", 1, 1)
    assert listed.next_attempt_at == NOW + timedelta(seconds=2)
    assert listed.reported


def test_the_same_failure_skips_the_record_at_the_threshold() -> None:
    listed = listing(_due("failed", "boom", attempts=2, same=2), "failed", "boom", NOW, POLICY)
    assert (listed.status, listed.attempts, listed.same_failures) == ("skipped", 3, 3)
    assert listed.next_attempt_at is None
    assert listed.reported


def test_another_failure_starts_counting_again() -> None:
    listed = listing(_due("failed", "boom", attempts=5, same=2), "failed", "bang", NOW, POLICY)
    assert (listed.status, listed.attempts, listed.same_failures) == ("failed", 6, 1)
    assert listed.next_attempt_at == NOW + timedelta(seconds=min(2 * 2**5, 60))


def test_a_record_pending_for_the_same_reason_is_reported_once() -> None:
    waiting = "currency EUR is not coupled yet"
    first = listing(None, "pending", waiting, NOW, POLICY)
    again = listing(_due("pending", waiting), "pending", waiting, NOW, POLICY)
    other = listing(
        _due("pending", waiting), "pending", "salesperson SP1 is not coupled", NOW, POLICY
    )
    assert first.reported and not again.reported and other.reported
    # Pending never skips, however often it repeats.
    assert again.status == "pending" and again.next_attempt_at is not None


@given(st.one_of(st.none(), due_records()), _statuses, failure_messages(), retry_policies())
def test_listing(
    previous: DueRecord | None, status: NotSynced, message: str, policy: RetryPolicy
) -> None:
    listed = listing(previous, status, message, NOW, policy)
    assert listed.attempts == (previous.attempts + 1 if previous else 1)
    repeated = previous is not None and same_failure(previous.message, message)
    assert listed.same_failures == (previous.same_failures + 1 if repeated and previous else 1)
    # Only a failure escalates, and only at the threshold.
    if status == "failed":
        given_up = listed.same_failures >= policy.skip_after_failures
        assert listed.status == ("skipped" if given_up else "failed")
    else:
        assert listed.status == status
    # A skipped record waits for an operator; any other is tried again, within the cap.
    if listed.status == "skipped":
        assert listed.next_attempt_at is None
    else:
        assert listed.next_attempt_at is not None
        delay = listed.next_attempt_at - NOW
        assert timedelta(0) < delay <= timedelta(seconds=policy.backoff_max_s)
    assert listed.reported or listed.status == "pending"


@given(retry_policies(), st.integers(1, 200))
def test_backoff_doubles_up_to_its_cap(policy: RetryPolicy, attempts: int) -> None:
    now, later = backoff(attempts, policy), backoff(attempts + 1, policy)
    assert now <= later <= timedelta(seconds=policy.backoff_max_s)
    if later < timedelta(seconds=policy.backoff_max_s) and attempts < 16:
        # Doubled, but for the microsecond a timedelta rounds to.
        assert abs(later - 2 * now) <= timedelta(microseconds=1)


def test_a_record_waits_for_its_lookup_targets_and_a_create_in_flight() -> None:
    currency = FieldMapping("currencyCode", "transactioncurrencyid", lookup=Lookup(("CURRENCY",)))
    owner = FieldMapping("salespersonCode", "ownerid", lookup=Lookup(("SALESPEOPLE", "USERS")))
    plain = FieldMapping("city", "address1_city")
    mapped = Mapped(
        (),
        (
            Unresolved(owner, "SP1", "not coupled", True),
            Unresolved(currency, "EUR", "not coupled", True),
            Unresolved(plain, "x", "no option", False),
        ),
    )
    assert waiting_for(mapped) == ("CURRENCY", "SALESPEOPLE", "USERS")
    assert waiting_for(mapped, "CUSTOMER") == ("CURRENCY", "CUSTOMER", "SALESPEOPLE", "USERS")
    assert waiting_for(None, "CUSTOMER") == ("CUSTOMER",)
    assert waiting_for(None) == ()
