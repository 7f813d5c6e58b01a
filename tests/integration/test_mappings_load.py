"""``tablesync mappings load`` against a real state database: the first load
asks nothing, a load that changes nothing writes nothing, and one that would
replace the mappings in force — changes made with ``mappings set`` included —
shows the difference and asks on a terminal, refuses without one unless
``--yes``."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file

pytestmark = pytest.mark.integration

DEFAULT = default_mapping_file().read_text()
LOADED = f"loaded {len(load_mapping_file(default_mapping_file())[1].names())} mappings"


async def _cli(
    state_dsn: str, *args: str, terminal_input: bytes | None = None
) -> tuple[int, str, str]:
    env = {**os.environ, "TABLESYNC_DATABASE_URL": state_dsn, "TABLESYNC_LOG_LEVEL": "warning"}
    argv = [sys.executable, "-m", "tablesync.cli", *args]
    if terminal_input is not None:
        # `script` runs the command on a pseudo-terminal and types our input into it.
        argv = ["script", "--quiet", "--return", "--command", shlex.join(argv), "/dev/null"]
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.PIPE if terminal_input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(terminal_input), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_load_shows_what_it_replaces_and_asks(state_dsn: str, tmp_path: Path) -> None:
    code, out, err = await _cli(state_dsn, "mappings", "load")
    assert code == 0, err
    assert LOADED in out

    code, out, err = await _cli(state_dsn, "mappings", "load")
    assert code == 0, err
    assert "nothing loaded" in out

    code, _, err = await _cli(state_dsn, "mappings", "set", "CUSTOMER", "--not-only-coupled")
    assert code == 0, err
    edited = tmp_path / "mappings.yaml"
    edited.write_text(
        DEFAULT.replace(
            "{bc: website, dataverse: websiteurl, max_length: 80}",
            "{bc: website, dataverse: websiteurl, max_length: 60}",
        )
    )
    diff = [
        "~ CUSTOMER sync_only_coupled: false -> true",
        "~ CUSTOMER fields[website<->websiteurl].max_length: 80 -> 60",
    ]

    code, out, err = await _cli(state_dsn, "mappings", "load", str(edited))
    assert code == 2, out
    assert "--yes" in err
    assert all(line in out for line in diff), out
    code, out, _ = await _cli(state_dsn, "mappings", "show", "CUSTOMER", "--json")
    assert '"sync_only_coupled": false' in out, "a refused load changed nothing"

    code, out, err = await _cli(state_dsn, "mappings", "load", str(edited), terminal_input=b"n\n")
    assert code == 1, out
    assert "Replace the mappings in force? [y/N]" in out
    code, out, err = await _cli(state_dsn, "mappings", "load", str(edited), terminal_input=b"y\n")
    assert code == 0, out + err
    assert all(line in out for line in diff), out
    assert LOADED in out
    code, out, _ = await _cli(state_dsn, "mappings", "show", "CUSTOMER", "--json")
    assert '"sync_only_coupled": true' in out

    code, out, err = await _cli(state_dsn, "mappings", "load", "--yes")
    assert code == 0, err
    assert "~ CUSTOMER fields[website<->websiteurl].max_length: 60 -> 80" in out
    assert LOADED in out


async def test_a_disabled_field_and_its_rules_are_stored_and_shown(
    state_dsn: str, tmp_path: Path
) -> None:
    edited = tmp_path / "mappings.yaml"
    before, customer = DEFAULT.split("\n  CUSTOMER:\n")
    customer = customer.replace(
        "{bc: website, dataverse: websiteurl, max_length: 80}",
        "{bc: website, dataverse: websiteurl, max_length: 80, enabled: false}",
        1,
    ).replace(
        "{bc: city, dataverse: address1_city, max_length: 30}",
        "{bc: city, dataverse: address1_city, max_length: 30,"
        " transformation_direction: to_integration,"
        " transformation_rules: [trim, {type: replace, find: St., replace_with: Saint}]}",
        1,
    )
    text = f"{before}\n  CUSTOMER:\n{customer}"
    assert text.count("enabled: false") == 1 and text.count("find: St.") == 1
    edited.write_text(text)
    code, out, err = await _cli(state_dsn, "mappings", "load", str(edited), "--yes")
    assert code == 0, out + err

    code, out, err = await _cli(state_dsn, "mappings", "show", "CUSTOMER", "--json")
    assert code == 0, err
    fields = {f["bc"]: f for f in json.loads(out)["fields"]}
    assert fields["website"]["enabled"] is False
    assert fields["city"]["enabled"] is True
    assert fields["city"]["transformation_rules"] == [
        {"type": "trim"},
        {"type": "replace", "find": "St.", "replace_with": "Saint"},
    ]
    assert fields["city"]["transformation_direction"] == "to_integration"
