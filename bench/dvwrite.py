"""``python -m bench.dvwrite``: Dataverse writes through ``DataverseApi.write`` against the
Dataverse emulator in a process of its own, in the connector's two forms: ``$batch``
only (``bulk_min=0``, the form before the bulk messages) and with the bulk messages
(CreateMultiple / UpsertMultiple / UpdateMultiple, read back by one ``$batch`` of GETs).

For each form, on an empty ``accounts`` table: N creates with ids (``only_new``, as a
full sync makes them), then N upserts of those rows, then N updates without an etag.
Each step reports its wall time, the HTTP requests the connector sent, and the CPU
seconds the emulator process and its PostgreSQL backends spent on it (from /proc).

    PYTHONPATH=services:. python -m bench.dvwrite [--records 5000] [--repeats 3]

The emulator's database is ``tablesync_bench_dvwrite`` on the server of
``TABLESYNC_DATABASE_URL`` (the local PostgreSQL by default), emptied before each step.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from bench.procs import Processes, python_argv
from tablesync.adapters.odata import DataverseApi
from tablesync.core.records import Create, Update, WriteOp, WriteResult, WriteValue, Written
from tablesync.localinfra.network import free_ports
from tablesync.logging import configure_logging
from tablesync.settings import DEFAULT_TOKEN, ApiSettings, Settings, with_database

__all__ = ["main"]

_DATABASE = "tablesync_bench_dvwrite"
_TICK = os.sysconf("SC_CLK_TCK")
_READY_S = 60.0


@dataclass(frozen=True, slots=True)
class Step:
    form: str
    step: str
    seconds: float
    requests: int
    emulator_cpu_s: float
    postgres_cpu_s: float


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class Probe:
    """CPU of the emulator and of the PostgreSQL backends serving its database."""

    def __init__(self, emulator_pid: int, admin: asyncpg.Connection) -> None:
        self.emulator_pid = emulator_pid
        self.admin = admin

    async def _backends(self) -> list[int]:
        rows = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            _DATABASE,
        )
        return [row["pid"] for row in rows]

    async def sample(self) -> tuple[float, dict[int, float]]:
        return _cpu_s(self.emulator_pid), {pid: _cpu_s(pid) for pid in await self._backends()}

    async def since(self, before: tuple[float, dict[int, float]]) -> tuple[float, float]:
        emulator, backends = await self.sample()
        postgres = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in backends.items())
        return emulator - before[0], postgres


def _account(n: int, tag: str) -> dict[str, WriteValue]:
    return {
        "name": f"{tag} Account {n:06d}",
        "accountnumber": f"{tag}{n:06d}",
        "telephone1": f"+1 425 555 {n % 10000:04d}",
        "emailaddress1": f"account{n}@example.com",
        "address1_line1": f"{n} Main Street",
        "address1_city": "Redmond",
        "address1_postalcode": f"{98000 + n % 1000}",
        "address1_country": "US",
        "creditlimit": float(n % 50000),
        "customertypecode": 3,
    }


def _steps(ids: Sequence[str]) -> list[tuple[str, Callable[[], list[WriteOp]]]]:
    return [
        (
            "create",
            lambda: [
                Create(_account(n, "C"), record_id=i, only_new=True) for n, i in enumerate(ids)
            ],
        ),
        ("upsert", lambda: [Create(_account(n, "U"), record_id=i) for n, i in enumerate(ids)]),
        (
            "update",
            lambda: [Update(i, {"description": f"updated {n}"}) for n, i in enumerate(ids)],
        ),
    ]


async def _run_form(
    form: str, url: str, records: int, probe: Probe, control: httpx.AsyncClient
) -> list[Step]:
    settings = ApiSettings.model_validate(
        {
            "base_url": f"{url}/api/data/v9.2",
            "bulk_min": 0 if form == "$batch" else 10,
        }
    )
    api = DataverseApi(settings)
    out: list[Step] = []
    try:
        assert (await control.post(f"{url}/_emulator/reset")).status_code == 204
        ids = [str(uuid.uuid4()) for _ in range(records)]
        for step, make in _steps(ids):
            ops = make()
            requests = api.stats.requests
            before = await probe.sample()
            started = time.perf_counter()
            results: list[WriteResult] = await api.write("accounts", ops)
            seconds = time.perf_counter() - started
            emulator_cpu, postgres_cpu = await probe.since(before)
            written = sum(isinstance(r, Written) and r.row is not None for r in results)
            if written != records:
                raise RuntimeError(f"{form} {step}: {written} of {records} written: {results[:3]}")
            out.append(
                Step(
                    form,
                    step,
                    seconds,
                    api.stats.requests - requests,
                    emulator_cpu,
                    postgres_cpu,
                )
            )
    finally:
        await api.aclose()
    return out


async def _until_answers(client: httpx.AsyncClient, url: str) -> None:
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the emulator did not answer at {url}")


async def run(records: int, repeats: int) -> list[Step]:
    dsn = with_database(Settings().database_dsn(), _DATABASE)
    [port] = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TABLESYNC_EMULATOR__DATAVERSE_DATABASE_URL": dsn,
        "TABLESYNC_EMULATOR__REQUESTS_PER_WINDOW": str(10**9),
        "TABLESYNC_LOG_LEVEL": "warning",
    }
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="dvwrite-") as workdir:
        async with Processes() as procs:
            child = await procs.spawn(
                "emulator-dataverse",
                python_argv("tablesync.cli", "emulator", "dataverse", "--port", str(port)),
                env=env,
                log=Path(workdir) / "emulator.log",
                tier=0,
            )
            headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
            async with httpx.AsyncClient(headers=headers, timeout=60) as control:
                await _until_answers(control, f"{url}/_emulator/config")
                admin = await asyncpg.connect(Settings().database_dsn())
                try:
                    probe = Probe(child.pid, admin)
                    for _ in range(repeats):
                        for form in ("$batch", "bulk"):
                            steps += await _run_form(form, url, records, probe, control)
                finally:
                    await admin.close()
    return steps


def _table(steps: list[Step], records: int) -> str:
    lines = [
        f"{'form':<7} {'step':<7} {'seconds':>8} {'records/s':>10} {'requests':>9} "
        f"{'emulator cpu s':>15} {'postgres cpu s':>15}"
    ]
    order = {"create": 0, "upsert": 1, "update": 2}
    keys = sorted({(s.form, s.step) for s in steps}, key=lambda k: (order[k[1]], k[0]))
    for form, step in keys:
        runs = [s for s in steps if (s.form, s.step) == (form, step)]
        seconds = statistics.median(s.seconds for s in runs)
        lines.append(
            f"{form:<7} {step:<7} {seconds:>8.2f} {records / seconds:>10.0f} "
            f"{statistics.median(s.requests for s in runs):>9.0f} "
            f"{statistics.median(s.emulator_cpu_s for s in runs):>15.2f} "
            f"{statistics.median(s.postgres_cpu_s for s in runs):>15.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dvwrite", description=__doc__)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    steps = asyncio.run(run(args.records, args.repeats))
    print(f"{args.records} accounts a step, median of {args.repeats} runs")
    print(_table(steps, args.records))


if __name__ == "__main__":
    main()
