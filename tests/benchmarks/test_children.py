"""A benchmark's child process goes when the benchmark is killed outright (SIGKILL)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import psutil
import pytest

from benchmarks.children import dies_with_parent

#: A benchmark that starts a child which would outlive it by a minute, says the child's pid
#: once the child runs (so past setpriv, which set the signal before it ran the child's
#: command: killed earlier, the parent would race it), and waits on its input to be killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys
    from benchmarks.children import dies_with_parent

    CHILD = "import time; print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen(
        dies_with_parent([sys.executable, "-c", CHILD]), stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline() == "up\\n"
    print(child.pid, flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("setpriv") is None,
    reason="the parent-death signal is Linux's, set by util-linux's setpriv",
)
def test_a_benchmark_killed_outright_takes_its_child_along() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        parent.kill()
        parent.wait(timeout=10)
        # Without the signal the child sleeps on for a minute and this times out.
        child.wait(timeout=10)


def test_without_setpriv_the_command_runs_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert dies_with_parent(["python", "-V"]) == ["python", "-V"]
