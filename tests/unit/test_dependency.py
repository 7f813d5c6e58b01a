"""The full synchronization's order, derived from the mappings' lookups and
``depends_on``: every mapping after all it depends on, ties in document order,
and a cycle refused with the cycle named."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.dependency import dependencies, dependency_order
from tablesync.core.mappings import FieldMapping, Lookup, TableMapping
from tablesync.errors import MappingError


def _mapping(
    name: str, *, lookups: tuple[str, ...] = (), depends_on: tuple[str, ...] = ()
) -> TableMapping:
    fields = tuple(
        FieldMapping(bc=f"ref{i}", dataverse=f"ref{i}id", lookup=Lookup(mappings=(target,)))
        for i, target in enumerate(lookups)
    )
    return TableMapping(
        name=name,
        bc_table="t",
        dataverse_table="t",
        direction="bidirectional",
        fields=(FieldMapping(bc="a", dataverse="a"), *fields),
        depends_on=depends_on,
    )


@st.composite
def _acyclic(draw: st.DrawFn) -> list[TableMapping]:
    """Mappings whose edges all point at a mapping earlier in a hidden ranking,
    shuffled into some document order."""
    n = draw(st.integers(min_value=1, max_value=9))
    names = [f"M{i}" for i in range(n)]
    made = []
    for i, name in enumerate(names):
        earlier = names[:i]
        lookups = draw(st.lists(st.sampled_from(earlier), max_size=3)) if earlier else []
        depends = (
            draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True)) if earlier else []
        )
        made.append(_mapping(name, lookups=tuple(lookups), depends_on=tuple(depends)))
    return draw(st.permutations(made))


@given(_acyclic())
def test_every_mapping_comes_after_what_it_depends_on(mappings: list[TableMapping]) -> None:
    ordered = dependency_order(mappings)
    assert sorted(m.name for m in ordered) == sorted(m.name for m in mappings)
    position = {m.name: i for i, m in enumerate(ordered)}
    for m in ordered:
        for dep in dependencies(m):
            assert position[dep] < position[m.name], (dep, m.name)


@given(_acyclic())
def test_each_mapping_goes_as_soon_as_it_can_in_document_order(
    mappings: list[TableMapping],
) -> None:
    """The first mapping of the document whose dependencies are all placed is
    always the next one: no reordering the edges do not ask for."""
    ordered = dependency_order(mappings)
    placed: set[str] = set()
    for m in ordered:
        first_ready = next(
            x
            for x in mappings
            if x.name not in placed and all(d in placed for d in dependencies(x))
        )
        assert m.name == first_ready.name
        placed.add(m.name)


@given(_acyclic(), st.data())
def test_a_closing_edge_is_refused_naming_the_cycle(
    mappings: list[TableMapping], data: st.DataObject
) -> None:
    ordered = dependency_order(mappings)
    # Pick a mapping with some dependency chain and make its root look it up.
    chained = [m for m in ordered if dependencies(m)]
    if not chained:
        chained = [ordered[0]]
    tail = data.draw(st.sampled_from(chained))
    root = tail
    while dependencies(root):
        root = next(m for m in ordered if m.name == dependencies(root)[0])
    closed = [
        _mapping(m.name, lookups=(*_lookups(m), tail.name), depends_on=m.depends_on)
        if m.name == root.name
        else m
        for m in mappings
    ]
    with pytest.raises(MappingError) as info:
        dependency_order(closed)
    cycle = info.value.reason.rsplit(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and len(cycle) >= 2
    by_name = {m.name: m for m in closed}
    for before, after in itertools.pairwise(cycle):
        assert after in dependencies(by_name[before]), (before, after)


def _lookups(m: TableMapping) -> tuple[str, ...]:
    return tuple(t for f in m.fields if f.lookup is not None for t in f.lookup.mappings)


def test_lookups_alone_order_the_mappings() -> None:
    ordered = dependency_order(
        [
            _mapping("ITEM", lookups=("UNIT",)),
            _mapping("CUSTOMER", lookups=("CURRENCY", "TERMS")),
            _mapping("UNIT"),
            _mapping("CURRENCY"),
            _mapping("TERMS"),
        ]
    )
    assert [m.name for m in ordered] == ["UNIT", "ITEM", "CURRENCY", "TERMS", "CUSTOMER"]


def test_depends_on_adds_an_edge_no_lookup_shows() -> None:
    ordered = dependency_order([_mapping("CUSTOMER"), _mapping("VENDOR")])
    assert [m.name for m in ordered] == ["CUSTOMER", "VENDOR"]
    ordered = dependency_order([_mapping("CUSTOMER", depends_on=("VENDOR",)), _mapping("VENDOR")])
    assert [m.name for m in ordered] == ["VENDOR", "CUSTOMER"]


def test_a_cycle_is_named_in_the_order_it_closes() -> None:
    with pytest.raises(MappingError) as info:
        dependency_order(
            [
                _mapping("CURRENCY"),
                _mapping("CUSTOMER", lookups=("CONTACTS",)),
                _mapping("CONTACTS", lookups=("CUSTOMER",)),
            ]
        )
    assert "CUSTOMER -> CONTACTS -> CUSTOMER" in str(info.value)
    assert info.value.mapping == "CUSTOMER"


def test_a_lookup_of_itself_is_a_cycle() -> None:
    with pytest.raises(MappingError, match="PARENT -> PARENT"):
        dependency_order([_mapping("PARENT", lookups=("PARENT",))])


def test_unknown_depends_on_is_named_and_unknown_lookup_left_to_the_reference_check() -> None:
    with pytest.raises(MappingError, match="unknown mapping 'NOPE'"):
        dependency_order([_mapping("A", depends_on=("NOPE",))])
    assert [m.name for m in dependency_order([_mapping("A", lookups=("NOPE",))])] == ["A"]
