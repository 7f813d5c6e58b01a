"""The dry run predicts the full synchronization that follows it, on the
simulator's deployment: the real capture, apply and coordinator sync a
history of users' changes on both in-memory sides; then, every service
down, users change both sides again (creates on either side, look-alikes
for the match, edits of one side and of both, records out of scope); the
dry run's counters, mapping by mapping and direction by direction, are the
ones the real full synchronization then reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablesync.adapters.avro import Codec
from tablesync.adapters.memory import memory_stores
from tablesync.adapters.memory.claims import MemoryPairClaims
from tablesync.application import Operator
from tablesync.application.dryrun import dry_run
from tablesync.core.events import Side
from tablesync.emulators.memory import MemorySide
from tablesync.errors import ApiUnavailable, RecordRejected
from tablesync.ports.api import SideApi
from tests.contract.conftest import StepClock
from tests.simulation.runner import _settle
from tests.simulation.sim import Sim, SimClock, Weights
from tests.simulation.users import FIELDS, MARKER, TABLE, Truth, run_users
from tests.simulation.vloop import VirtualLoop
from tests.simulation.world import MAPPING, World, _document, open_world, restart

_SIDES: tuple[Side, Side] = ("bc", "dataverse")
_RUN_LIMIT_S = 600.0

Counts = dict[tuple[str, str], dict[str, int]]


@dataclass(frozen=True)
class Create:
    side: Side
    name: str
    city: str
    in_scope: bool = True


@dataclass(frozen=True)
class LookAlikes:
    """The same customer number created on both sides: coupled by the match."""

    bc_name: str
    dv_name: str


@dataclass(frozen=True)
class Edit:
    side: Side
    pick: int
    field: str
    value: str


@dataclass(frozen=True)
class EditBoth:
    """Both records of a coupling changed: a conflict."""

    pick: int
    field: str
    bc_value: str
    dv_value: str


Change = Create | LookAlikes | Edit | EditBoth

# Longer than BC's 30 characters for a city: Dataverse takes it, BC gets it cut.
_CITIES = st.sampled_from(("Oslo", "Lyon", "Graz", "", "Llanfairpwllgwyngyll Gogerychwyrn"))
_NAMES = st.sampled_from(("Ada", "Grace", "Edsger", "Barbara"))
_SIDE = st.sampled_from(_SIDES)
_FIELD = st.sampled_from(tuple(FIELDS))

_changes = st.lists(
    st.one_of(
        st.builds(Create, _SIDE, _NAMES, _CITIES, st.booleans()),
        st.builds(LookAlikes, _NAMES, _NAMES),
        st.builds(Edit, _SIDE, st.integers(0, 20), _FIELD, _CITIES | _NAMES),
        st.builds(EditBoth, st.integers(0, 20), _FIELD, _CITIES | _NAMES, _CITIES | _NAMES),
    ),
    max_size=8,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(1, 10**6), changes=_changes, unconditional=st.booleans())
def test_the_dry_run_predicts_the_full_sync_that_follows(
    seed: int, changes: list[Change], unconditional: bool
) -> None:
    loop = VirtualLoop()
    try:
        with _quiet():
            predicted, real = loop.run_until_complete(
                _predicted_and_real(seed, changes, unconditional)
            )
    finally:
        loop.close()
    assert predicted == real


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The services log every batch; only for this test (other tests read the logs)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    try:
        yield
    finally:
        structlog.configure(**saved)


async def _predicted_and_real(
    seed: int, changes: Sequence[Change], unconditional: bool
) -> tuple[Counts, Counts]:
    sim = Sim(seed, Weights(crash=0.0, transient=0.0))
    rng = sim.rng
    world = await open_world(sim)
    try:
        await run_users(
            sim,
            world.sides,  # type: ignore[arg-type]
            Truth(),
            records=rng.randint(1, 4),
            actions=rng.randint(0, 8),
            span_s=rng.uniform(4.0, 12.0),
        )
        await _settle(world)
    finally:
        await world.close()
    for n, change in enumerate(changes):
        await _perform(world, n, change)
    operator = _operator(world)
    before = world.versions(), await _couplings(world)
    previews = await operator.dry_run(unconditional=unconditional)
    assert (world.versions(), await _couplings(world)) == before, "the dry run wrote"
    await _skip_capture_past_now(world)
    world = restart(world)
    try:
        run_id = await operator.full_sync(unconditional=unconditional)
        # On the loop's virtual time: ``wait``'s own timeout is on the wall clock.
        progress = await asyncio.wait_for(operator.wait(run_id), timeout=_RUN_LIMIT_S)
    finally:
        await world.close()
    assert progress.run.status == "finished", progress.run.message
    predicted = {
        (p.mapping, p.direction): {k: v for k, v in p.counts.items() if v} for p in previews
    }
    real = {
        (j.mapping, j.direction): {k: v for k, v in j.counts.items() if v} for j in progress.jobs
    }
    return predicted, real


async def _perform(world: World, n: int, change: Change) -> None:
    """One user's change, made while no service runs; one the side refuses
    (a value too long for it) is no change."""
    sides = world.sides
    marker = f"D{n:03d}"
    try:
        match change:
            case Create(side=side, name=name, city=city, in_scope=in_scope):
                sides[side].user_create(TABLE[side], _values(side, marker, name, city, in_scope))
            case LookAlikes(bc_name=bc_name, dv_name=dv_name):
                for side, name in (("bc", bc_name), ("dataverse", dv_name)):
                    sides[side].user_create(TABLE[side], _values(side, marker, name, "", True))
            case Edit(side=side, pick=pick, field=field, value=value):
                rows = sides[side].rows(TABLE[side])
                if rows:
                    row = rows[pick % len(rows)]
                    sides[side].user_update(TABLE[side], row.id, {FIELDS[field][side]: value})
            case EditBoth(pick=pick, field=field, bc_value=bc_value, dv_value=dv_value):
                pairs = sorted(await _couplings(world))
                if pairs:
                    bc_id, dv_id = pairs[pick % len(pairs)]
                    sides["bc"].user_update("customers", bc_id, {FIELDS[field]["bc"]: bc_value})
                    sides["dataverse"].user_update(
                        "accounts", dv_id, {FIELDS[field]["dataverse"]: dv_value}
                    )
    except RecordRejected:
        pass


def _values(side: Side, marker: str, name: str, city: str, in_scope: bool) -> dict[str, Any]:
    values: dict[str, Any] = {MARKER[side]: marker}
    values[FIELDS["name"][side]] = f"{marker} {name}"
    values[FIELDS["city"][side]] = city
    if side == "dataverse":
        values.update({"statecode": 0, "customertypecode": 3 if in_scope else 1})
    else:
        values["blocked"] = " " if in_scope else "All"
    return values


async def _couplings(world: World) -> list[tuple[str, str]]:
    return [(c.bc_id, c.dv_id) for c in await world.stores.couplings.of_mapping(MAPPING)]


def _operator(world: World) -> Operator:
    async def api(side: Side) -> SideApi:
        found: SideApi = world.sides[side]  # type: ignore[assignment]
        return found

    return Operator(
        stores=world.stores,
        apis=api,
        publisher=world.broker.publisher(),
        window=world.broker.window(),
        codec=Codec(),
        clock=SimClock(),
        topics=world.topics,
        settings=world.settings.sync,
        claims=lambda: MemoryPairClaims(world.database),
    )


async def _skip_capture_past_now(world: World) -> None:
    """Continuous capture must not take the users' changes first: the full
    synchronization is the one to compare. Capture re-reads a look-back
    behind its checkpoint, so the checkpoints go past now by more than that,
    and Dataverse's change tracking starts from a delta link taken now."""
    sync = world.settings.sync
    ahead = max(sync.poll_overlap_s, sync.lookback_s) + 0.5
    past = SimClock().now() + timedelta(seconds=ahead)
    for side in _SIDES:
        await world.stores.checkpoints.store_watermark(side, TABLE[side], past)
    link = [p async for p in world.sides["dataverse"].track_changes("accounts")][-1].delta_link
    await world.stores.checkpoints.store_delta_link("dataverse", "accounts", link)


async def test_a_side_that_cannot_be_read_whole_stops_the_dry_run() -> None:
    """A copy short of a table's rows would predict creates that are updates."""
    clock = StepClock()
    stores = memory_stores(clock=clock)
    mappings = await stores.mappings.replace_all(_document())
    sides = {s: MemorySide(s, clock) for s in _SIDES}
    sides["bc"].user_create("customers", {"number": "C1", "displayName": "Ada", "blocked": " "})
    sides["dataverse"].faults.fail(method="read_all", table="accounts")

    with pytest.raises(ApiUnavailable):
        await dry_run(mappings, dict(sides), {}, clock)  # type: ignore[arg-type]
