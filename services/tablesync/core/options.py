"""Option values between the sides: a BC enum member and a Dataverse choice value.

A field mapping's ``option_map`` pairs BC values with Dataverse values, one to one; a
value travels through its pair, the other way through the inverse. A value with no pair
is not guessed at: it is a record error naming the field and the value. An empty value
(BC's blank member, Dataverse's null choice) with no pair of its own stays empty.

``propose`` drafts an ``option_map`` from both sides' metadata by label, the way a user
would pair them by eye, and lists what it could not pair. Nothing here does I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tablesync.core.events import FieldValue, Side
from tablesync.core.metadata import Option

__all__ = ["NoOption", "Proposal", "label_key", "propose", "translate"]

_NOT_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True, slots=True)
class NoOption:
    """``value`` has no pair in the option map."""

    value: FieldValue


def _empty(value: FieldValue) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def translate(
    pairs: Iterable[tuple[FieldValue, FieldValue]],
    value: FieldValue,
    *,
    source: Side,
    equal: Callable[[FieldValue, FieldValue], bool],
) -> FieldValue | NoOption:
    """``value`` of ``source`` as the other side's option; ``equal`` compares values
    as the field compares them (numbers by value, Code fields without case)."""
    for bc, dv in pairs:
        src, dst = (bc, dv) if source == "bc" else (dv, bc)
        if equal(src, value):
            return dst
    if _empty(value):
        return None
    return NoOption(value)


def label_key(label: str) -> str:
    """A label as compared when pairing: case, spaces and punctuation aside."""
    return _NOT_WORD.sub("", label).casefold()


@dataclass(frozen=True, slots=True)
class Proposal:
    pairs: tuple[tuple[int | str, int | str], ...]
    """BC value, Dataverse value: the options whose labels are the same."""
    bc_unpaired: tuple[Option, ...]
    dataverse_unpaired: tuple[Option, ...]


def propose(bc: Sequence[Option], dataverse: Sequence[Option]) -> Proposal:
    """Pairs each BC option with the Dataverse option of the same label (the first of
    each label on either side); the rest are left for the user."""
    by_label: dict[str, Option] = {}
    for option in dataverse:
        by_label.setdefault(label_key(option.label), option)
    pairs: list[tuple[int | str, int | str]] = []
    paired_dv: set[int | str] = set()
    bc_unpaired: list[Option] = []
    for option in bc:
        match = by_label.get(label_key(option.label))
        if match is None or match.value in paired_dv or not label_key(option.label):
            bc_unpaired.append(option)
            continue
        pairs.append((option.value, match.value))
        paired_dv.add(match.value)
    return Proposal(
        pairs=tuple(pairs),
        bc_unpaired=tuple(bc_unpaired),
        dataverse_unpaired=tuple(o for o in dataverse if o.value not in paired_dv),
    )
