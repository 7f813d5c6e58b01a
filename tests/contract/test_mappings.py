"""The ``Mappings`` port: what every implementation must do."""

from __future__ import annotations

import copy

import pytest

from tablesync.core import filters
from tablesync.core.dependency import dependencies
from tablesync.core.mapping_load import build_mappings, catalog_tables
from tablesync.errors import MappingError
from tests.contract.state_fixtures import (
    StateHarness,
    default_document,
    memory_state_fixture,  # noqa: F401
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
)

ORDER = ("CURRENCY", "SALESPEOPLE", "VENDOR", "CUSTOMER", "CONTACTS")


class MappingsContract:
    @pytest.fixture
    def state(self) -> StateHarness:
        raise NotImplementedError

    async def test_nothing_is_loaded_at_first(self, state: StateHarness) -> None:
        mappings = state.stores.mappings
        assert await mappings.version() is None
        with pytest.raises(LookupError, match="no mappings are loaded"):
            await mappings.load()
        with pytest.raises(LookupError):
            await mappings.change("CUSTOMER", direction="bidirectional")

    async def test_the_mappings_in_force_are_the_document_loaded_in_dependency_order(
        self, state: StateHarness
    ) -> None:
        mappings = state.stores.mappings
        document = default_document()
        # The document's own order is not the dependency order.
        document["mappings"] = dict(reversed(list(document["mappings"].items())))
        loaded = await mappings.replace_all(document)
        names = list(loaded.names())
        assert sorted(names) == sorted(document["mappings"])
        # Each after every mapping its lookups and depends_on go through, and
        # BC's five in BC's order, whatever the document's order was.
        for m in loaded.mappings:
            assert all(names.index(d) < names.index(m.name) for d in dependencies(m)), names
        assert [n for n in names if n in ORDER] == list(ORDER)
        assert await mappings.load() == loaded
        assert await mappings.version() is not None

    async def test_an_invalid_document_is_refused_and_the_mappings_stay(
        self, state: StateHarness
    ) -> None:
        mappings = state.stores.mappings
        loaded = await mappings.replace_all(default_document())
        version = await mappings.version()
        bad = default_document()
        bad["mappings"]["CUSTOMER"]["direction"] = "sideways"
        await state.elapse()
        with pytest.raises(MappingError, match="CUSTOMER"):
            await mappings.replace_all(bad)
        assert await mappings.load() == loaded
        assert await mappings.version() == version

    async def test_replace_all_replaces_every_mapping(self, state: StateHarness) -> None:
        mappings = state.stores.mappings
        await mappings.replace_all(default_document())
        version = await mappings.version()
        await state.elapse()
        document = default_document()
        document["mappings"] = {"CURRENCY": document["mappings"]["CURRENCY"]}
        await mappings.replace_all(document)
        assert (await mappings.load()).names() == ("CURRENCY",)
        later = await mappings.version()
        assert version is not None and later is not None and later > version

    async def test_a_change_is_validated_stored_and_shows_as_a_new_version(
        self, state: StateHarness
    ) -> None:
        mappings = state.stores.mappings
        await mappings.replace_all(default_document())
        version = await mappings.version()
        await state.elapse()
        changed = await mappings.change(
            "CUSTOMER", sync_only_coupled=False, table_filter="number ne ''"
        )
        assert changed.direction == "bidirectional"
        assert not changed.sync_only_coupled
        assert changed.table_filter is not None
        assert filters.to_odata(changed.table_filter) == "number ne ''"
        currency = await mappings.change("CURRENCY", direction="bidirectional")
        assert currency.direction == "bidirectional"
        assert (await mappings.load()).get("CURRENCY") == currency
        loaded = await mappings.load()
        assert loaded.get("CUSTOMER") == changed
        later = await mappings.version()
        assert version is not None and later is not None and later > version
        # The rest of the mapping is the document's, as loaded.
        as_loaded = build_mappings(default_document(), catalog_tables()).get("CUSTOMER")
        assert loaded.get("CUSTOMER").fields == as_loaded.fields

    async def test_an_empty_filter_text_clears_the_filter(self, state: StateHarness) -> None:
        mappings = state.stores.mappings
        await mappings.replace_all(default_document())
        assert (await mappings.load()).get("VENDOR").integration_table_filter is not None
        changed = await mappings.change("VENDOR", integration_table_filter="")
        assert changed.integration_table_filter is None
        assert (await mappings.load()).get("VENDOR").integration_table_filter is None
        # A filter not given is left as it is.
        kept = await mappings.change("SALESPEOPLE", direction="from_integration")
        assert kept.integration_table_filter is not None

    async def test_an_invalid_change_is_refused_and_nothing_changes(
        self, state: StateHarness
    ) -> None:
        mappings = state.stores.mappings
        loaded = await mappings.replace_all(default_document())
        version = await mappings.version()
        await state.elapse()
        with pytest.raises(MappingError, match="table_filter"):
            await mappings.change("CUSTOMER", table_filter="number eq")
        with pytest.raises(MappingError):
            await mappings.change("CUSTOMER", direction="sideways")
        with pytest.raises(KeyError, match="NOPE"):
            await mappings.change("NOPE", direction="bidirectional")
        assert await mappings.load() == loaded
        assert await mappings.version() == version

    async def test_sync_only_coupled_is_set_on_the_named_mappings(
        self, state: StateHarness
    ) -> None:
        mappings = state.stores.mappings
        original = default_document()
        await mappings.replace_all(copy.deepcopy(original))
        version = await mappings.version()
        await state.elapse()
        await mappings.set_only_coupled(["CUSTOMER", "VENDOR", "NOPE"], False)
        loaded = await mappings.load()
        assert {m.name for m in loaded.mappings if not m.sync_only_coupled} == {
            "CUSTOMER",
            "VENDOR",
        } | {n for n, body in original["mappings"].items() if not body["sync_only_coupled"]}
        later = await mappings.version()
        assert version is not None and later is not None and later > version
        await mappings.set_only_coupled(["CUSTOMER"], True)
        assert (await mappings.load()).get("CUSTOMER").sync_only_coupled


class TestMemoryMappings(MappingsContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresMappings(MappingsContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state
