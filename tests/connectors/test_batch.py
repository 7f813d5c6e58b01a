"""$batch bodies: what goes out and what comes back, in the documented shapes."""

from __future__ import annotations

import orjson
import pytest

from tablesync.adapters.odata.batch import (
    BatchFormatError,
    BatchRequest,
    decode_json_batch,
    decode_multipart,
    encode_changesets,
    encode_json_batch,
    encode_requests,
)

# The continue-on-error answer of Dataverse's "Execute batch operations" page: the first
# request failed, the other two succeeded.
DOCUMENTED_RESPONSE = (
    b"--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"HTTP/1.1 400 Bad Request\r\n"
    b"REQ_ID: de4c5227-4a28-4ebd-8ced-3392ece1697b\r\n"
    b"Content-Type: application/json; odata.metadata=minimal\r\n"
    b"OData-Version: 4.0\r\n"
    b"\r\n"
    b'{"error":{"code":"0x80044331","message":"A validation error occurred."}}\r\n'
    b"--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"HTTP/1.1 204 No Content\r\n"
    b"OData-Version: 4.0\r\n"
    b"Location: https://org/api/data/v9.2/tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)\r\n"
    b"OData-EntityId: https://org/api/data/v9.2/tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)\r\n"
    b"\r\n"
    b"\r\n"
    b"--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139\r\n"
    b"Content-Type: multipart/mixed; boundary=changesetresponse_64cc\r\n"
    b"\r\n"
    b"--changesetresponse_64cc\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: 3\r\n"
    b"\r\n"
    b"HTTP/1.1 201 Created\r\n"
    b"Content-Type: application/json; odata.metadata=minimal\r\n"
    b"\r\n"
    b'{"@odata.etag":"W/\\"77180907\\"","subject":"Task 3","activityid":"d31b"}\r\n'
    b"--changesetresponse_64cc--\r\n"
    b"--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139--\r\n"
)
CONTENT_TYPE = "multipart/mixed; boundary=batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139"


def test_documented_response_decodes_part_by_part() -> None:
    parts = decode_multipart(CONTENT_TYPE, DOCUMENTED_RESPONSE)

    assert [[r.status for r in part] for part in parts] == [[400], [204], [201]]
    assert parts[0][0].data["error"]["message"] == "A validation error occurred."
    assert parts[1][0].headers["odata-entityid"].endswith("(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)")
    assert parts[1][0].data is None
    assert parts[2][0].content_id == "3"
    assert parts[2][0].data["activityid"] == "d31b"


def test_bare_line_feeds_are_read_too() -> None:
    parts = decode_multipart(CONTENT_TYPE, DOCUMENTED_RESPONSE.replace(b"\r\n", b"\n"))

    assert [[r.status for r in part] for part in parts] == [[400], [204], [201]]


@pytest.mark.parametrize("cut", [40, len(DOCUMENTED_RESPONSE) // 2, len(DOCUMENTED_RESPONSE) - 60])
def test_a_body_cut_short_is_refused(cut: int) -> None:
    with pytest.raises(BatchFormatError):
        decode_multipart(CONTENT_TYPE, DOCUMENTED_RESPONSE[:cut])


def test_a_body_that_is_not_multipart_is_refused() -> None:
    with pytest.raises(BatchFormatError):
        decode_multipart("application/json", b"{}")


def test_one_change_set_per_request_with_its_own_content_id() -> None:
    requests = [
        BatchRequest(
            "POST", "/api/data/v9.2/accounts", {"Prefer": "return=representation"}, {"name": "A"}
        ),
        BatchRequest("PATCH", "/api/data/v9.2/accounts(1)", {"If-Match": "*"}, {"name": "B"}),
        BatchRequest("DELETE", "/api/data/v9.2/accounts(2)", {"If-Match": 'W/"7"'}),
    ]
    content_type, body = encode_changesets(requests, boundary="batch_x")

    assert content_type == "multipart/mixed; boundary=batch_x"
    text = body.decode()
    assert text.count("Content-Type: multipart/mixed; boundary=changeset_") == 3
    assert text.count("Content-ID: ") == 3
    assert "POST /api/data/v9.2/accounts HTTP/1.1\r\nPrefer: return=representation\r\n" in text
    assert 'DELETE /api/data/v9.2/accounts(2) HTTP/1.1\r\nIf-Match: W/"7"\r\n' in text
    assert text.endswith("--batch_x--\r\n")
    # The request body is exactly the JSON, ending where the delimiter's CRLF starts.
    assert '\r\n\r\n{"name":"B"}\r\n--changeset_' in text


def test_encoded_batch_splits_back_into_its_requests() -> None:
    requests = [BatchRequest("PATCH", f"/x({i})", {"If-Match": "*"}, {"n": i}) for i in range(5)]
    content_type, body = encode_changesets(requests)

    # Reading our own request with the response parser checks the framing: five
    # top-level parts, each one change set holding one application/http part.
    framed = body.replace(b"PATCH /x(", b"HTTP/1.1 200 OK\r\nX-Was: /x(")
    parts = decode_multipart(content_type, framed)

    assert len(parts) == 5
    assert [p[0].content_id for p in parts] == ["1", "2", "3", "4", "5"]


def test_reads_go_in_top_level_parts_without_change_sets() -> None:
    requests = [
        BatchRequest("GET", f"/api/data/v9.2/accounts?$filter=accountid eq {i}", {"Prefer": "p"})
        for i in range(3)
    ]
    content_type, body = encode_requests(requests, boundary="batch_r")

    text = body.decode()
    assert content_type == "multipart/mixed; boundary=batch_r"
    assert "changeset" not in text
    assert "Content-ID" not in text
    assert text.count("--batch_r\r\nContent-Type: application/http\r\n") == 3
    assert "GET /api/data/v9.2/accounts?$filter=accountid eq 1 HTTP/1.1\r\nPrefer: p\r\n" in text
    assert text.endswith("--batch_r--\r\n")
    framed = body.replace(b"GET /api", b"HTTP/1.1 200 OK\r\nX-Was: /api")
    assert [len(p) for p in decode_multipart(content_type, framed)] == [1, 1, 1]


def test_json_batch_round_trip_out_of_order() -> None:
    body = orjson.loads(
        encode_json_batch(
            [
                BatchRequest(
                    "POST", "companies(c)/customers", {"Content-Type": "application/json"}, {"a": 1}
                ),
                BatchRequest("DELETE", "companies(c)/customers(x)", {"If-Match": "*"}),
            ]
        )
    )
    assert body["requests"][0] == {
        "id": "0",
        "method": "POST",
        "url": "companies(c)/customers",
        "headers": {"Content-Type": "application/json"},
        "body": {"a": 1},
    }
    assert "body" not in body["requests"][1]

    answer = {
        "responses": [
            {"id": "1", "status": 204, "headers": {}},
            {
                "id": "0",
                "status": 201,
                "headers": {"Content-Type": "application/json"},
                "body": {"id": "X"},
            },
        ]
    }
    responses = decode_json_batch(answer, 2)
    assert [r.status for r in responses] == [201, 204]
    assert responses[0].data == {"id": "X"}
    assert responses[0].headers == {"content-type": "application/json"}


def test_json_batch_missing_an_answer_is_refused() -> None:
    with pytest.raises(BatchFormatError):
        decode_json_batch({"responses": [{"id": "0", "status": 200}]}, 2)
