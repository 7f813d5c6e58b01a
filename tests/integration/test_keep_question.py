"""The question at the end of a full synchronization on the real stack: a run
requested with it open waits for the operator's answer, keeps "sync only
coupled records" cleared when told to, and restores it when nobody answers in
time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import sys
import time

import pytest

from tablesync.application import Operator
from tablesync.core.stored import KEEP_ANSWER, KEEP_QUESTION
from tablesync.errors import CommandRefused, NotFound
from tablesync.runtime.operations import RunProgress
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration
WAIT_S = 120.0


@pytest.fixture
def stack(idle_stack: Stack) -> Stack:
    return idle_stack


async def _only_coupled(operator: Operator) -> dict[str, bool]:
    return {m.name: m.sync_only_coupled for m in (await operator.mappings()).mappings}


async def test_a_full_sync_that_asks_keeps_the_setting_cleared_when_told(
    stack: Stack, operator: Operator
) -> None:
    before = await _only_coupled(operator)
    assert before["CURRENCY"] and before["CUSTOMER"]
    await stack.start()
    run_id = await operator.full_sync(mappings=["CURRENCY"], ask=True)

    async def asking() -> RunProgress | None:
        progress = await operator.progress(run_id)
        return progress if progress.run.question or progress.done else None

    asked = await wait_for(asking, timeout_s=WAIT_S, what="the run to ask")
    assert asked.run.question == KEEP_QUESTION, asked.run.message
    # The jobs are over: the run waits on the operator alone.
    assert [(j.mapping, j.status) for j in asked.jobs] == [("CURRENCY", "finished")]
    assert asked.as_dict()["question"] == KEEP_QUESTION

    answered = await operator.answer(run_id, True, requested_by="ops")
    assert answered.options[KEEP_ANSWER] is True and answered.question is None
    with pytest.raises(CommandRefused, match="answered already"):
        await operator.answer(run_id, False)

    done = await operator.wait(run_id, timeout_s=WAIT_S)
    assert done.run.status == "finished", done.run.message
    assert done.run.message == ("sync only coupled records is now cleared on CURRENCY (answered)")
    after = await _only_coupled(operator)
    assert after == {**before, "CURRENCY": False}
    with pytest.raises(CommandRefused, match="ended already"):
        await operator.answer(run_id, False)
    with pytest.raises(NotFound):
        await operator.answer("8b1c8f5e-58a2-4c25-9d36-f3a3f2b0a111", True)


async def test_an_unanswered_question_restores_the_setting(
    stack: Stack, operator: Operator
) -> None:
    before = await _only_coupled(operator)
    await stack.start(sync=stack.settings.sync.model_copy(update={"keep_question_wait_s": 1.0}))
    run_id = await operator.full_sync(mappings=["CURRENCY"], ask=True)
    done = await operator.wait(run_id, timeout_s=WAIT_S)
    assert done.run.status == "finished", done.run.message
    assert done.run.message == (
        "sync only coupled records restored on CURRENCY (not answered within 1 s)"
    )
    assert done.run.options["question"] == KEEP_QUESTION and done.run.options["asked_at"]
    assert KEEP_ANSWER not in done.run.options
    assert await _only_coupled(operator) == before


async def test_a_coordinator_stopped_while_it_asks_leaves_the_question_to_the_next(
    stack: Stack, operator: Operator
) -> None:
    await stack.start()
    run_id = await operator.full_sync(mappings=["CURRENCY"], ask=True)

    async def asking() -> RunProgress | None:
        progress = await operator.progress(run_id)
        return progress if progress.run.question or progress.done else None

    asked = await wait_for(asking, timeout_s=WAIT_S, what="the run to ask")
    assert asked.run.question == KEEP_QUESTION, asked.run.message
    await stack.stop()
    # Stopped while it waited: the run is not finished, its question still open.
    waiting = await operator.progress(run_id)
    assert waiting.run.status == "running" and waiting.run.question == KEEP_QUESTION
    await operator.answer(run_id, True, requested_by="ops")

    await stack.start()
    done = await operator.wait(run_id, timeout_s=WAIT_S)
    assert done.run.status == "finished", done.run.message
    assert done.run.message == "sync only coupled records is now cleared on CURRENCY (answered)"
    assert (await _only_coupled(operator))["CURRENCY"] is False


async def test_a_run_that_does_not_ask_refuses_an_answer(operator: Operator) -> None:
    # No services run: the run stays requested, asking nothing.
    run_id = await operator.full_sync(mappings=["CURRENCY"])
    with pytest.raises(CommandRefused, match="asks nothing"):
        await operator.answer(run_id, True)
    await operator.cancel(run_id)
    with pytest.raises(CommandRefused, match="ended already"):
        await operator.answer(run_id, True)


async def _read_until(fd: int, seen: bytearray, text: bytes, timeout_s: float) -> None:
    """Reads the terminal's output until ``text`` shows or it closes."""
    deadline = time.monotonic() + timeout_s
    while text not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {text!r}; the terminal shows {seen!r}")
        try:
            chunk = await asyncio.wait_for(asyncio.to_thread(os.read, fd, 4096), timeout=1.0)
        except TimeoutError:
            continue
        except OSError:  # the child closed its terminal
            return
        if not chunk:
            return
        seen += chunk


async def test_full_sync_on_a_terminal_prompts_and_sends_the_answer(
    stack: Stack, operator: Operator
) -> None:
    await stack.start()
    controller, terminal = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        "full-sync",
        "--wait",
        "--mapping",
        "CURRENCY",
        env=stack.environment(TABLESYNC_LOG_LEVEL="warning"),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        await _read_until(controller, seen, b"[y/N]", WAIT_S)
        assert b"Keep 'sync only coupled records' cleared on CURRENCY? [y/N]" in seen, seen
        [run] = await operator.runs(limit=1)
        assert run.question == KEEP_QUESTION and run.options["ask"] is True
        os.write(controller, b"y\n")
        await _read_until(controller, seen, b"(answered)", WAIT_S)
        assert await asyncio.wait_for(process.wait(), WAIT_S) == 0, seen
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(OSError):
            os.close(controller)
    done = await operator.progress(run.run_id)
    assert done.run.status == "finished"
    assert done.run.message == "sync only coupled records is now cleared on CURRENCY (answered)"
    assert (await _only_coupled(operator))["CURRENCY"] is False


async def test_full_sync_in_a_script_does_not_ask(stack: Stack, operator: Operator) -> None:
    await stack.start()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        "full-sync",
        "--wait",
        "--mapping",
        "CURRENCY",
        env=stack.environment(TABLESYNC_LOG_LEVEL="warning"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), WAIT_S)
    assert process.returncode == 0, err.decode()
    [run] = await operator.runs(limit=1)
    assert "ask" not in run.options and "question" not in run.options
    assert run.message == "sync only coupled records restored on CURRENCY"
    assert b"sync only coupled records restored on CURRENCY" in out
