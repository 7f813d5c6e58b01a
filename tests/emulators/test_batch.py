"""``$batch`` on both emulators: Dataverse multipart with change sets, BC JSON batches."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
import pytest

from tablesync.emulators.common.multipart import boundary_of, parse_http_request, split_parts
from tests.emulators.conftest import BcEmulator, Emulator

pytestmark = pytest.mark.integration

CRLF = "\r\n"


def _request(
    method: str, url: str, body: object | None = None, content_id: str | None = None
) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {url} HTTP/1.1"]
    if body is not None:
        lines += ["Content-Type: application/json; type=entry", "", orjson.dumps(body).decode()]
    else:
        lines += [""]
    return CRLF.join(lines) + CRLF


def _change_set(boundary: str, parts: list[str]) -> str:
    inner = "".join(f"--{boundary}{CRLF}{p}" for p in parts) + f"--{boundary}--{CRLF}"
    return f"Content-Type: multipart/mixed; boundary={boundary}{CRLF}{CRLF}{inner}"


def _batch(parts: list[str]) -> tuple[str, bytes]:
    boundary = f"batch_{uuid.uuid4()}"
    body = "".join(f"--{boundary}{CRLF}{p}" for p in parts) + f"--{boundary}--{CRLF}"
    return f'multipart/mixed; boundary="{boundary}"', body.encode()


def _statuses(content_type: str, body: bytes) -> list[Any]:
    """The status of each top-level part; a list of statuses for a change set response."""
    out: list[Any] = []
    for part in split_parts(body, boundary_of(content_type) or ""):
        kind = part.headers.get("content-type", "")
        if kind.startswith("multipart/mixed"):
            inner = split_parts(part.content, boundary_of(kind) or "")
            out.append([_status(p.content) for p in inner])
        else:
            out.append(_status(part.content))
    return out


def _status(content: bytes) -> int:
    match = re.match(rb"HTTP/1.1 (\d{3})", content)
    assert match is not None, content[:80]
    return int(match[1])


async def _names(dv: Emulator) -> list[str]:
    rows = (await dv.client.get(f"{dv.api}/accounts", params={"$orderby": "name"})).json()
    return [r["name"] for r in rows["value"]]


async def _post_batch(
    dv: Emulator, parts: list[str], prefer: str | None = None
) -> tuple[int, list[Any], bytes, str]:
    content_type, body = _batch(parts)
    headers = {"Content-Type": content_type, "OData-Version": "4.0"}
    if prefer:
        headers["Prefer"] = prefer
    response = await dv.client.post(f"{dv.api}/$batch", content=body, headers=headers)
    kind = response.headers["content-type"]
    return response.status_code, _statuses(kind, response.content), response.content, kind


def _failing_change_set() -> str:
    missing = "00000000-0000-0000-0000-0000000000ff"
    return _change_set(
        "changeset_b",
        [
            _request("POST", "/api/data/v9.2/accounts", {"name": "B1"}, "1"),
            _request(
                "POST",
                "/api/data/v9.2/accounts",
                {"name": "B2", "ownerid@odata.bind": f"/systemusers({missing})"},
                "2",
            ),
        ],
    )


async def test_failed_change_set_rolls_back_and_others_commit(dv: Emulator) -> None:
    ok = _change_set(
        "changeset_a",
        [
            _request("POST", "/api/data/v9.2/accounts", {"name": "A1"}, "1"),
            _request("POST", "/api/data/v9.2/accounts", {"name": "A2"}, "2"),
        ],
    )
    after = _request("POST", "/api/data/v9.2/accounts", {"name": "C1"})
    status, parts, _, _ = await _post_batch(
        dv, [ok, _failing_change_set(), after], prefer="odata.continue-on-error"
    )
    assert status == 200
    assert parts == [[204, 204], 404, 204]
    assert await _names(dv) == ["A1", "A2", "C1"]


async def test_batch_stops_at_the_first_failure_without_continue_on_error(dv: Emulator) -> None:
    first = _request("POST", "/api/data/v9.2/accounts", {"name": "First"})
    later = _request("POST", "/api/data/v9.2/accounts", {"name": "Never"})
    status, parts, _, _ = await _post_batch(dv, [first, _failing_change_set(), later])
    assert status == 404
    assert parts == [204, 404]
    assert await _names(dv) == ["First"]


async def test_content_id_references_inside_a_change_set(dv: Emulator) -> None:
    change_set = _change_set(
        "changeset_refs",
        [
            _request(
                "POST", "/api/data/v9.2/contacts", {"firstname": "First", "lastname": "Last"}, "1"
            ),
            _request(
                "POST",
                "/api/data/v9.2/accounts",
                {"name": "IcM Account", "primarycontactid@odata.bind": "$1"},
                "2",
            ),
            _request("PATCH", "$1", {"lastname": "Renamed"}, "3"),
        ],
    )
    read = _request("GET", "/api/data/v9.2/accounts?$select=name,_primarycontactid_value")
    status, parts, body, kind = await _post_batch(dv, [change_set, read])
    assert status == 200
    assert parts == [[204, 204, 204], 200]
    response_part = split_parts(body, boundary_of(kind) or "")[1]
    listing = parse_http_request(b"GET / HTTP/1.1\r\n" + response_part.content.split(b"\r\n", 1)[1])
    (account,) = orjson.loads(listing.body)["value"]
    contact = await dv.client.get(f"{dv.api}/contacts({account['_primarycontactid_value']})")
    assert contact.json()["fullname"] == "First Renamed"


async def test_unknown_content_id_and_get_in_change_set_are_400(dv: Emulator) -> None:
    unknown = _change_set("cs1", [_request("PATCH", "$9", {"name": "x"}, "1")])
    status, parts, _, _ = await _post_batch(dv, [unknown], prefer="odata.continue-on-error")
    assert (status, parts) == (200, [400])
    get = _change_set("cs2", [_request("GET", "/api/data/v9.2/accounts", None, "1")])
    _, parts, _, _ = await _post_batch(dv, [get], prefer="odata.continue-on-error")
    assert parts == [400]


async def test_independent_requests_and_reads(dv: Emulator) -> None:
    parts = [
        _request("POST", "accounts", {"name": "Relative URL"}),
        _request("POST", f"{dv.api}/accounts", {"name": "Absolute URL"}),
        _request("GET", "/api/data/v9.2/accounts/$count"),
    ]
    status, statuses, _, _ = await _post_batch(dv, parts)
    assert (status, statuses) == (200, [204, 204, 200])


async def _bc_batch(bc: BcEmulator, requests: list[dict[str, object]], **headers: str) -> Any:
    response = await bc.client.post(
        f"{bc.api}/$batch", json={"requests": requests}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["responses"]


def _bc_create(bc: BcEmulator, request_id: str, name: str) -> dict[str, object]:
    return {
        "id": request_id,
        "method": "POST",
        "url": f"companies({bc.company})/customers",
        "headers": {"Content-Type": "application/json"},
        "body": {"displayName": name},
    }


async def _bc_names(bc: BcEmulator) -> list[str]:
    rows = (await bc.client.get(bc.set_url("customers"))).json()["value"]
    return sorted(r["displayName"] for r in rows)


async def test_bc_json_batch_runs_requests_independently(bc: BcEmulator) -> None:
    bad = {**_bc_create(bc, "2", "Bad"), "body": {"type": "Invalid Type"}}
    responses = await _bc_batch(bc, [_bc_create(bc, "1", "One"), bad, _bc_create(bc, "3", "Three")])
    assert [(r["id"], r["status"]) for r in responses] == [("1", 201), ("2", 400), ("3", 201)]
    assert responses[0]["body"]["displayName"] == "One"
    assert "is not an option" in responses[1]["body"]["error"]["message"]
    assert await _bc_names(bc) == ["One", "Three"]


async def test_bc_isolation_snapshot_reverts_everything_on_failure(bc: BcEmulator) -> None:
    first = _bc_create(bc, "1", "One")
    patch: dict[str, object] = {
        "id": "2",
        "method": "PATCH",
        "url": "customers(00000000-0000-0000-0000-000000000001)",
        "headers": {"If-Match": "*"},
        "body": {"displayName": "Missing"},
    }
    responses = await _bc_batch(bc, [first, patch], Isolation="snapshot")
    assert [r["status"] for r in responses] == [201, 404]
    assert await _bc_names(bc) == []
    ok = await _bc_batch(
        bc, [_bc_create(bc, "1", "A"), _bc_create(bc, "2", "B")], Isolation="snapshot"
    )
    assert [r["status"] for r in ok] == [201, 201]
    assert await _bc_names(bc) == ["A", "B"]


async def test_bc_batch_limit(bc: BcEmulator) -> None:
    requests = [_bc_create(bc, str(i), f"C{i}") for i in range(101)]
    response = await bc.client.post(f"{bc.api}/$batch", json={"requests": requests})
    assert response.status_code == 400
    assert "at most 100" in response.json()["error"]["message"]


async def test_a_database_error_outside_change_sets_affects_only_its_request(dv: Emulator) -> None:
    key = "00000000-0000-0000-0000-00000000000d"
    parts = [
        _request("POST", "accounts", {"accountid": key, "name": "Original"}),
        _request("POST", "accounts", {"accountid": key, "name": "Duplicate"}),
        _request("POST", "accounts", {"name": "After"}),
    ]
    status, statuses, _, _ = await _post_batch(dv, parts, prefer="odata.continue-on-error")
    assert (status, statuses) == (200, [204, 412, 204])
    assert await _names(dv) == ["After", "Original"]
    status, statuses, _, _ = await _post_batch(
        dv,
        [
            _request("POST", "accounts", {"accountid": key}),
            _request("POST", "accounts", {"name": "Z"}),
        ],
    )
    assert (status, statuses) == (412, [412])
    assert await _names(dv) == ["After", "Original"]


async def test_bc_database_error_affects_only_its_request(bc: BcEmulator) -> None:
    duplicate = {**_bc_create(bc, "2", "Twin"), "body": {"number": "N1", "displayName": "Twin"}}
    first = {**_bc_create(bc, "1", "First"), "body": {"number": "N1", "displayName": "First"}}
    responses = await _bc_batch(bc, [first, duplicate, _bc_create(bc, "3", "Third")])
    assert [r["status"] for r in responses] == [201, 400, 201]
    assert await _bc_names(bc) == ["First", "Third"]
