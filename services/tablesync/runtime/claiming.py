"""Claims on the records a batch decides (``ports.claims``), taken one way by
every path that decides pairs: apply's batches and retries, the operator's
actions, and replay. Whichever of them decides a pair, the others wait until
its effects are committed, and decide on what it left.

- ``claim_stable`` claims the records ``read_keys`` names, reading them again
  once held (a holder before may have coupled or uncoupled them) until what
  is held covers what is read.
- ``claim_items``: the same for the items of an ``Applier`` batch; with
  ``give_way``, a wait for records held elsewhere ends as ``GaveWay`` once
  that event is set (apply's partitions being revoked: the holder may be the
  frozen instance the rebalance is about).
- ``apply_claimed``: applies items under their claim and commits with it, for
  the paths that apply on their own (actions, replay). A claim lost before
  the commit, or pairs coupled meanwhile that another holder has, make the
  items applied again from a fresh read, as apply's batch is read again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from tablesync.core.effects import BatchEffects
from tablesync.errors import ClaimLost, ClaimsBusy, GaveWay
from tablesync.ports.claims import PairClaim, PairClaims, PairKey
from tablesync.ports.state import ApplyState
from tablesync.runtime.applier import Applier, Item

__all__ = ["ATTEMPTS", "apply_claimed", "claim_items", "claim_stable"]

log = structlog.get_logger()

ATTEMPTS = 3
"""How often ``apply_claimed`` applies items whose claim was lost or could not
be extended before it gives up with the last error."""


async def claim_stable(
    claims: PairClaims,
    mapping: str,
    read_keys: Callable[[], Awaitable[set[PairKey]]],
    *,
    wait_s: float,
) -> PairClaim:
    """A claim holding every record ``read_keys`` names once it is held;
    ``ClaimsBusy`` when another holder keeps any of them past ``wait_s``."""
    keys = await read_keys()
    claim = await claims.take(mapping, keys, wait_s=wait_s)
    try:
        while not (now := await read_keys()) <= claim.keys:
            if await claim.extend(now - claim.keys):
                break
            # Never waited for while holding: taken again as a whole.
            await claim.release()
            keys |= now
            claim = await claims.take(mapping, keys, wait_s=wait_s)
    except BaseException:
        await claim.release()
        raise
    return claim


async def claim_items(
    applier: Applier,
    claims: PairClaims,
    items: Sequence[Item],
    *,
    wait_s: float,
    give_way: asyncio.Event | None = None,
) -> PairClaim | None:
    """Claims every record ``items`` decide about and their counterparts; None
    when there are no items. ``GaveWay`` when ``give_way`` is set before the
    claim is held: nothing is claimed then."""
    if not items:
        return None
    take = claim_stable(
        claims, applier.mapping_name, lambda: applier.claim_keys(items), wait_s=wait_s
    )
    if give_way is None:
        return await take
    claiming = asyncio.ensure_future(take)
    waiter = asyncio.ensure_future(give_way.wait())
    try:
        await asyncio.wait((claiming, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not claiming.done():
            # A take cut short holds nothing: ``claim_stable`` releases what
            # it held, and a lock wait cut short drops its connection.
            claiming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claiming
    if claiming.cancelled():
        raise GaveWay(applier.mapping_name, len(items))
    return claiming.result()


async def apply_claimed(
    applier: Applier,
    claims: PairClaims,
    state: ApplyState,
    items: Sequence[Item],
    *,
    wait_s: float,
) -> BatchEffects:
    """Applies ``items`` under their claim and commits the effects with it;
    returns what was committed. ``ClaimsBusy`` when the records stay held past
    ``wait_s``; after ``ATTEMPTS`` tries cut short by a lost claim, the last
    ``ClaimLost`` or ``ClaimsBusy``."""
    attempt = 1
    while True:
        effects = BatchEffects(applier.mapping_name)
        claim = await claim_items(applier, claims, items, wait_s=wait_s)
        try:
            await applier.apply(items, effects, claim)
            await state.commit(effects, claim=claim.proof() if claim else None)
            return effects
        except (ClaimLost, ClaimsBusy) as exc:
            # None of this try's effects is committed, and a write it made on a
            # side is found again as after a crash (intents, idempotent writes):
            # the items are read and decided again, on what the holder of the
            # records meanwhile left.
            if attempt >= ATTEMPTS:
                raise
            log.info(
                "claim_lost_applied_again",
                mapping=applier.mapping_name,
                records=len(items),
                attempt=attempt,
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            if claim is not None:
                await claim.release()
        attempt += 1
