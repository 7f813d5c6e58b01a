"""Server-driven paging: ``@odata.nextLink`` with a keyset ``$skiptoken``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulators.conftest import BcEmulator, Emulator

pytestmark = pytest.mark.integration


async def _pages(emulator: Emulator, url: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
    pages = []
    next_url: str | None = url
    while next_url is not None:
        response = await emulator.client.get(next_url, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["value"])
        next_url = body.get("@odata.nextLink")
        kwargs.pop("params", None)
    return pages


async def _bc_customers(bc: BcEmulator, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        response = await bc.client.post(
            bc.set_url("customers"),
            json={"displayName": f"Customer {i:02d}", "city": f"City {i % 4}"},
        )
        rows.append(response.json())
    return rows


async def test_bc_pages_at_the_configured_max_page_size(bc: BcEmulator) -> None:
    created = await _bc_customers(bc, 12)
    await bc.configure(max_page_size=5)
    pages = await _pages(bc, bc.set_url("customers"))
    assert [len(p) for p in pages] == [5, 5, 2]
    seen = [r["id"] for p in pages for r in p]
    assert sorted(seen) == sorted(r["id"] for r in created)
    assert seen == sorted(seen)  # default order: by id


async def test_bc_nextlink_keeps_the_query_options(bc: BcEmulator) -> None:
    await _bc_customers(bc, 9)
    await bc.configure(max_page_size=1)
    response = await bc.client.get(
        bc.set_url("customers"),
        params={"$filter": "city eq 'City 1'", "$select": "displayName,city"},
    )
    link = response.json()["@odata.nextLink"]
    assert "$filter=city%20eq%20'City%201'" in link and "$select=displayName,city" in link
    pages = await _pages(bc, link)
    rows = response.json()["value"] + [r for p in pages for r in p]
    assert sorted(r["displayName"] for r in rows) == ["Customer 01", "Customer 05"]


async def test_bc_top_spans_pages(bc: BcEmulator) -> None:
    await _bc_customers(bc, 10)
    await bc.configure(max_page_size=3)
    pages = await _pages(bc, bc.set_url("customers"), params={"$top": "7"})
    assert [len(p) for p in pages] == [3, 3, 1]


async def test_rows_modified_while_paging_are_never_lost(bc: BcEmulator) -> None:
    created = await _bc_customers(bc, 20)
    await bc.configure(max_page_size=4)
    url = bc.set_url("customers")
    params = {"$orderby": "lastModifiedDateTime,id"}
    response = await bc.client.get(url, params=params)
    seen = {r["id"] for r in response.json()["value"]}
    link = response.json()["@odata.nextLink"]
    edits = 0
    while link:
        # Change one row already read and one not read yet before every page.
        unseen = [r for r in created if r["id"] not in seen]
        for row in [next(r for r in created if r["id"] in seen), *unseen[:1]]:
            patch = await bc.client.patch(
                bc.set_url("customers", row["id"]),
                json={"phoneNumber": f"edit {edits}"},
                headers={"If-Match": "*"},
            )
            assert patch.status_code == 200
            edits += 1
        page = (await bc.client.get(link)).json()
        seen |= {r["id"] for r in page["value"]}
        link = page.get("@odata.nextLink")
    assert seen == {r["id"] for r in created}


async def test_dataverse_maxpagesize_preference(dv: Emulator) -> None:
    for i in range(11):
        await dv.client.post(f"{dv.api}/contacts", json={"lastname": f"Person {i:02d}"})
    headers = {"Prefer": "odata.maxpagesize=4"}
    first = await dv.client.get(
        f"{dv.api}/contacts", params={"$select": "lastname"}, headers=headers
    )
    assert first.headers["preference-applied"] == "odata.maxpagesize=4"
    pages = await _pages(dv, first.json()["@odata.nextLink"], headers=headers)
    assert [len(first.json()["value"]), *map(len, pages)] == [4, 4, 3]


async def test_dataverse_top_is_ignored_with_maxpagesize(dv: Emulator) -> None:
    for i in range(5):
        await dv.client.post(f"{dv.api}/accounts", json={"name": f"A{i}"})
    only_top = await dv.client.get(f"{dv.api}/accounts", params={"$top": "2"})
    assert len(only_top.json()["value"]) == 2
    assert "@odata.nextLink" not in only_top.json()
    both = await dv.client.get(
        f"{dv.api}/accounts", params={"$top": "2"}, headers={"Prefer": "odata.maxpagesize=3"}
    )
    assert len(both.json()["value"]) == 3
    assert "@odata.nextLink" in both.json()


def _expected_order(rows: list[dict[str, Any]]) -> list[str]:
    """city descending (nulls last), then name ascending, without regard to case; then id."""
    with_city = sorted(
        (r for r in rows if r["address1_city"] is not None),
        key=lambda r: (r["name"].lower(), r["accountid"]),
    )
    with_city.sort(key=lambda r: r["address1_city"].lower(), reverse=True)
    without = sorted(
        (r for r in rows if r["address1_city"] is None),
        key=lambda r: (r["name"].lower(), r["accountid"]),
    )
    return [r["accountid"] for r in with_city + without]


async def test_orderby_several_keys_with_nulls_across_pages(dv: Emulator) -> None:
    cities = ["Seattle", "atlanta", None, "Boston", "seattle", None, "Atlanta", "boston"]
    for i in range(24):
        await dv.client.post(
            f"{dv.api}/accounts",
            json={"name": f"{'ab'[i % 2]}ccount {i % 5}", "address1_city": cities[i % len(cities)]},
        )
    everything = (await dv.client.get(f"{dv.api}/accounts")).json()["value"]
    headers = {"Prefer": "odata.maxpagesize=5"}
    pages = await _pages(
        dv,
        f"{dv.api}/accounts",
        params={"$orderby": "address1_city desc,name asc"},
        headers=headers,
    )
    assert [r["accountid"] for p in pages for r in p] == _expected_order(everything)


async def test_skiptoken_from_another_query_is_refused(dv: Emulator) -> None:
    for i in range(3):
        await dv.client.post(f"{dv.api}/accounts", json={"name": f"A{i}"})
    first = await dv.client.get(
        f"{dv.api}/accounts",
        params={"$orderby": "name"},
        headers={"Prefer": "odata.maxpagesize=1"},
    )
    token = first.json()["@odata.nextLink"].split("$skiptoken=")[1]
    other = await dv.client.get(f"{dv.api}/accounts", params={"$skiptoken": token})
    assert other.status_code == 400
    garbage = await dv.client.get(f"{dv.api}/accounts", params={"$skiptoken": "%%%"})
    assert garbage.status_code == 400
