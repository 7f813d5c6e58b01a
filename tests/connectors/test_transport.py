"""Transport edge cases of the retrying client, over httpx.MockTransport."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from tablesync.adapters.odata.dataverse import DataverseApi
from tablesync.adapters.odata.http import ODataHttp
from tablesync.adapters.odata.retry import RetryPolicy, retry_after_s
from tablesync.adapters.transient import TRANSIENT
from tablesync.core.records import Create, Rejected, Update, WriteOp, Written
from tablesync.errors import ApiAuthError, ApiUnavailable, ReadRefused
from tests.connectors.fakes import DV_BASE, FakeTime, api_settings, mock_http

OK_PAGE: dict[str, list[object]] = {"value": []}
THROTTLED = "Number of requests exceeded the limit"


def replies(*answers: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """A handler giving ``answers`` in turn (an exception is raised), the last one forever."""
    queue: Iterator[httpx.Response | Exception] = iter(answers)
    last: list[httpx.Response | Exception] = []

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(queue, None)
        if answer is None:
            answer = last[0]
        else:
            last[:] = [answer]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


def json_response(status: int, body: object = None, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=orjson.dumps(body) if body is not None else b"",
        headers={"Content-Type": "application/json", **headers},
    )


class CutStream(httpx.AsyncByteStream):
    """A body that stops half-way, as when the peer closes the connection."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"value": [{"accountid": "'
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


async def test_429_waits_the_retry_after_seconds_then_succeeds() -> None:
    time = FakeTime()
    http = mock_http(
        replies(
            json_response(429, {"error": {}}, **{"Retry-After": "7"}), json_response(200, OK_PAGE)
        ),
        time,
    )

    reply = await http.send("GET", "accounts")

    assert reply.status == 200
    assert time.sleeps == [7.0]
    assert (http.stats.requests, http.stats.retries, http.stats.throttled) == (2, 1, 1)
    await http.aclose()


async def test_429_with_an_http_date_waits_until_then() -> None:
    time = FakeTime()
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    http = mock_http(
        replies(json_response(429, None, **{"Retry-After": when}), json_response(200, OK_PAGE)),
        time,
    )

    await http.send("GET", "accounts")

    assert len(time.sleeps) == 1
    assert 28.0 <= time.sleeps[0] <= 30.0
    await http.aclose()


async def test_429_holds_back_every_request_of_the_client() -> None:
    time = FakeTime()
    http = mock_http(replies(json_response(200, OK_PAGE)), time)

    http.hold_back(12.0)
    await http.send("GET", "accounts")

    assert time.sleeps == [12.0]
    await http.aclose()


async def test_5xx_burst_is_retried_with_jittered_backoff() -> None:
    time = FakeTime()
    http = mock_http(
        replies(
            json_response(500), json_response(502), json_response(503), json_response(200, OK_PAGE)
        ),
        time,
    )

    reply = await http.send("GET", "accounts")

    assert reply.status == 200
    assert len(time.sleeps) == 3
    # Full jitter: uniform in [0, min(max, base * 2**retry)].
    assert all(0.0 <= s <= min(1.0, 0.1 * 2**i) for i, s in enumerate(time.sleeps))
    assert http.stats.retries == 3
    await http.aclose()


async def test_retries_spent_raise_unavailable_naming_side_method_path_status() -> None:
    time = FakeTime()
    http = mock_http(replies(json_response(503)), time)

    with pytest.raises(ApiUnavailable) as caught:
        await http.send("GET", "accounts?$filter=name%20eq%20'x'")

    message = str(caught.value)
    assert message.startswith("dataverse: GET /api/data/v9.2/accounts")
    assert "4 attempts" in message
    assert "status 503" in message
    assert caught.value.status == 503
    assert http.stats.requests == 4
    assert http.stats.unavailable == 1
    await http.aclose()


async def test_a_timeout_is_retried() -> None:
    time = FakeTime()
    http = mock_http(replies(httpx.ReadTimeout("slow"), json_response(200, OK_PAGE)), time)

    reply = await http.send("GET", "accounts")

    assert reply.status == 200
    assert http.stats.retries == 1
    await http.aclose()


async def test_a_body_cut_short_is_retried() -> None:
    time = FakeTime()
    http = mock_http(
        replies(httpx.Response(200, stream=CutStream()), json_response(200, OK_PAGE)), time
    )

    reply = await http.send("GET", "accounts")

    assert reply.data == OK_PAGE
    assert http.stats.retries == 1
    await http.aclose()


async def test_a_garbled_success_body_is_retried() -> None:
    time = FakeTime()
    garbled = httpx.Response(
        200, content=b'{"value": [', headers={"Content-Type": "application/json"}
    )
    http = mock_http(replies(garbled, json_response(200, OK_PAGE)), time)

    reply = await http.send("GET", "accounts")

    assert reply.data == OK_PAGE
    await http.aclose()


async def test_a_create_that_may_have_been_applied_is_not_sent_twice() -> None:
    time = FakeTime()
    http = mock_http(replies(json_response(500), json_response(201, {"id": "x"})), time)

    with pytest.raises(ApiUnavailable, match="may have applied it"):
        await http.send("POST", "accounts", content=b"{}")

    assert http.stats.requests == 1
    await http.aclose()


@pytest.mark.parametrize(
    "first",
    [
        json_response(503),
        json_response(429, None, **{"Retry-After": "1"}),
        httpx.ConnectError("refused"),
    ],
    ids=["503", "429", "connect-error"],
)
async def test_a_create_the_server_did_not_apply_is_sent_again(
    first: httpx.Response | Exception,
) -> None:
    time = FakeTime()
    http = mock_http(replies(first, json_response(201, {"id": "x"})), time)

    reply = await http.send("POST", "accounts", content=b"{}")

    assert reply.status == 201
    await http.aclose()


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_raise_auth_error(status: int) -> None:
    time = FakeTime()
    http = mock_http(
        replies(json_response(status, {"error": {"code": "0x80048306", "message": "denied"}})), time
    )

    with pytest.raises(ApiAuthError, match=f"GET /api/data/v9.2/accounts: {status} denied"):
        await http.send("GET", "accounts")
    assert http.stats.requests == 1
    await http.aclose()


async def test_record_level_4xx_is_returned_to_the_caller() -> None:
    time = FakeTime()
    http = mock_http(
        replies(json_response(412, {"error": {"code": "", "message": "version mismatch"}})), time
    )

    reply = await http.send("PATCH", "accounts(1)", content=b"{}")

    assert reply.status == 412
    assert reply.data["error"]["message"] == "version mismatch"
    await http.aclose()


async def test_bearer_token_is_sent_and_never_logged() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return json_response(503) if len(seen) == 1 else json_response(200, OK_PAGE)

    time = FakeTime()
    http = mock_http(handler, time)
    with capture_logs() as logs:
        await http.send("GET", "accounts")

    assert seen == ["Bearer local-dev-token"] * 2
    assert logs and all("local-dev-token" not in repr(entry) for entry in logs)
    await http.aclose()


def test_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert retry_after_s("120") == 120.0
    assert retry_after_s(" 3 ") == 3.0
    assert retry_after_s("Wed, 01 Jan 2025 00:00:30 GMT", now=now) == 30.0
    assert retry_after_s("Tue, 31 Dec 2024 23:59:00 GMT", now=now) == 0.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("inf") is None
    assert retry_after_s("-5") is None


def test_backoff_is_capped_full_jitter() -> None:
    top = RetryPolicy(5, 0.5, 4.0, random=lambda: 1.0)
    assert [top.backoff_s(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert RetryPolicy(5, 0.5, 4.0, random=lambda: 0.0).backoff_s(3) == 0.0
    assert top.backoff_s(10_000) == 4.0


# ---------------------------------------------------------------- a batch part throttled


def _batch_answer(statuses: list[int], boundary: str = "batchresponse_t") -> httpx.Response:
    chunks: list[bytes] = []
    for status in statuses:
        body = (
            b'{"accountid":"00000000-0000-0000-0000-000000000001","modifiedon":"2025-01-01T00:00:00Z",'
            b'"@odata.etag":"W/\\"5\\""}'
            if status < 300
            else orjson.dumps({"error": {"code": "0x80072322", "message": THROTTLED}})
        )
        head = (
            f"--{boundary}\r\nContent-Type: application/http\r\n"
            "Content-Transfer-Encoding: binary\r\n\r\n"
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            + ("Retry-After: 4\r\n" if status == 429 else "")
            + "\r\n"
        )
        chunks.append(head.encode() + body + b"\r\n")
    content = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return httpx.Response(
        200, content=content, headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}
    )


async def test_a_throttled_part_of_a_batch_is_sent_again_alone() -> None:
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        parts = request.content.count(b"Content-ID: ")
        sent.append(parts)
        assert request.headers["prefer"] == "odata.continue-on-error"
        return _batch_answer([201, 429]) if len(sent) == 1 else _batch_answer([200])

    time = FakeTime()
    api = DataverseApi(api_settings(), http=mock_http(handler, time))
    ops: list[WriteOp] = [
        Create({"name": "a"}, record_id="00000000-0000-0000-0000-000000000001"),
        Update("00000000-0000-0000-0000-000000000001", {"name": "b"}),
    ]

    results = await api.write("accounts", ops)

    assert sent == [2, 1]
    assert time.sleeps == [4.0]
    assert all(isinstance(r, Written) and r.row is not None for r in results)
    assert api.stats.throttled == 1
    await api.aclose()


async def test_a_part_throttled_past_the_budget_is_rejected_not_raised() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _batch_answer([429] * request.content.count(b"Content-ID: "))

    time = FakeTime()
    api = DataverseApi(
        api_settings(max_retries=2),
        http=mock_http(handler, time, settings=api_settings(max_retries=2)),
    )

    results = await api.write(
        "accounts", [Update("00000000-0000-0000-0000-000000000001", {"name": "b"})]
    )

    assert results == [Rejected(429, THROTTLED)]
    await api.aclose()


async def test_concurrent_requests_share_the_connection_budget() -> None:
    active = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return json_response(200, OK_PAGE)

    http = ODataHttp(
        "dataverse", api_settings(max_connections=3), transport=httpx.MockTransport(handler)
    )
    await asyncio.gather(*(http.send("GET", "accounts") for _ in range(12)))

    assert peak == 3
    await http.aclose()


def test_base_url_is_kept_for_relative_and_absolute_paths() -> None:
    time = FakeTime()
    http = mock_http(replies(json_response(200)), time)
    assert str(http.url("accounts")) == f"{DV_BASE}/accounts"
    assert (
        str(http.url("/BC/api/x/companies(1)/y")) == "http://dataverse.test/BC/api/x/companies(1)/y"
    )
    assert str(http.url("https://other.test/a?b=1")) == "https://other.test/a?b=1"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, "Principal user is missing prvReadAccount privilege"),
        (400, "Could not find a property named 'nosuch'"),
        (414, "The request URL is too long"),
    ],
)
async def test_a_refused_read_is_a_refused_read_waited_out_not_a_crash(
    status: int, message: str
) -> None:
    time = FakeTime()
    http = mock_http(
        replies(json_response(status, {"error": {"code": "x", "message": message}})), time
    )
    api = DataverseApi(api_settings(), http=http)

    with pytest.raises(ReadRefused, match=f"{status} {message}") as refused:
        await api.get_many("accounts", [str(uuid.uuid4())])
    assert refused.value.status == status
    assert refused.value.entity_set == "accounts"
    assert refused.value.reason.startswith(f"GET /api/data/v9.2/accounts: {status} ")
    # A permission is every read's; a query refused may be served narrower.
    assert refused.value.credentials is (status == 403)
    assert isinstance(refused.value, ApiAuthError) is (status == 403)
    assert isinstance(refused.value, TRANSIENT)
    await api.aclose()
