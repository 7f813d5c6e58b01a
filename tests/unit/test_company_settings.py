"""The BC companies to sync: a list, or the single company of the older settings."""

from __future__ import annotations

import os

import pytest

from tablesync.errors import ConfigError
from tablesync.settings import ApiSettings, Settings


@pytest.fixture(autouse=True)
def no_tablesync_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TABLESYNC_")]:
        monkeypatch.delenv(name)


def test_the_single_company_settings_are_a_list_of_one() -> None:
    assert ApiSettings().company_refs() == [None]
    assert ApiSettings(company_name="CRONUS USA, Inc.").company_refs() == ["CRONUS USA, Inc."]
    both = ApiSettings(company_name="CRONUS USA, Inc.", company_id="ABC")
    assert both.company_refs() == ["ABC"]


def test_companies_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLESYNC_BC__COMPANIES", '["CRONUS USA, Inc.", " CRONUS Canada, Inc."]')
    assert Settings().bc.company_refs() == ["CRONUS USA, Inc.", "CRONUS Canada, Inc."]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"companies": ["A", "B"], "company_name": "A"}, "not both"),
        ({"companies": ["A", "B"], "company_id": "x"}, "not both"),
        ({"companies": ["A", " "]}, "an empty entry"),
        ({"companies": ["A", "B", "A"]}, "names 'A' twice"),
    ],
)
def test_a_bad_list_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, object], message: str
) -> None:
    for name, value in values.items():
        text = value if isinstance(value, str) else str(value).replace("'", '"')
        monkeypatch.setenv(f"TABLESYNC_BC__{name.upper()}", text)
    with pytest.raises(ConfigError, match=message):
        Settings()


def test_companies_are_refused_on_the_dataverse_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLESYNC_DATAVERSE__COMPANIES", '["A"]')
    with pytest.raises(ConfigError, match="BC only"):
        Settings()
