"""Stopping the ``diffsde`` command: Ctrl-C, SIGTERM and SIGHUP at any time (during ``import torch``
included) give one line on stderr, exit status 128 + the signal (130, 143, 129) and the same
cleanup; ``--version`` and ``import diffsde`` import no torch (issue 11, items 4 and 23).

In-process tests send the signal to this process from inside the command (the handler runs at
the next bytecode), with a guard handler installed first so that a missing handler fails the test
instead of killing pytest. Subprocess tests interrupt ``import torch`` itself through an import
hook, so they stop before torch loads and take a fraction of a second.
"""

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest

import diffsde
from diffsde import cli, commands

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def interactive_sigint() -> None:
    """In a child before exec: SIGINT as an interactive shell leaves it. A background job of a
    non-interactive shell (as CI may run us) inherits SIGINT ignored, and the command keeps an
    ignored signal ignored, as Python itself does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Unhandled(Exception):
    """The signal reached the guard: the command did not handle it."""


@pytest.fixture
def guard():
    """Install guard handlers for SIGTERM and SIGHUP and Python's own SIGINT handler (restored afterwards)."""
    def unhandled(signum, frame):
        raise Unhandled(signal.Signals(signum).name)

    previous = {s: signal.signal(s, unhandled) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)  # as interactive Python has it
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_stop_signal_cleans_up_and_exits_with_its_status(signum, status, tmp_path, capsys, monkeypatch, guard):
    def killed_while_writing(*args, **kwargs):  # after the table, while the folder is half written
        os.kill(os.getpid(), signum)
        pytest.fail("the signal did not stop the command")

    monkeypatch.setattr(commands.plots, "alpha_bar_vs_exp", killed_while_writing)
    assert cli.main(["limit", "--n", "100", "1000", "--out", str(tmp_path / "out")]) == status
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert err == ("diffsde limit: interrupted\n" if signum == signal.SIGINT else f"diffsde limit: stopped by {name}\n")
    assert list(tmp_path.iterdir()) == []  # no folder, no .out.*.partial
    assert signal.getsignal(signal.SIGTERM).__name__ == "unhandled"  # the caller's handlers are back


def test_a_stop_signal_while_the_folder_is_renamed_in_waits_for_the_rename(tmp_path, capsys, monkeypatch, guard):
    import diffsde._output as output
    rename = output.rename_noreplace

    def rename_then_killed(source, target):
        os.kill(os.getpid(), signal.SIGTERM)  # held until the folder is in place
        rename(source, target)

    monkeypatch.setattr(output, "rename_noreplace", rename_then_killed)
    assert cli.main(["limit", "--n", "100", "1000", "--out", str(tmp_path / "out")]) == 143
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [output.MANIFEST, "alpha_bar.png", "limit.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


HOOK = """
    import os, signal, sys

    class StopDuringImport:  # sends the signal as `import torch` starts; the handler runs inside the import
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                os.kill(os.getpid(), signal.{signal})
                for _ in range(10000):
                    pass
            return None

    sys.meta_path.insert(0, StopDuringImport())
    from diffsde.__main__ import main  # what the `diffsde` script runs, as it runs it
    sys.argv = ["diffsde", "limit", "--n", "100", "1000"]
    sys.exit(main())
"""


@pytest.mark.parametrize("name, status, line", [("SIGINT", 130, "diffsde: interrupted\n"),
                                                ("SIGTERM", 143, "diffsde: stopped by SIGTERM\n")])
def test_a_stop_signal_during_import_torch_is_one_line(name, status, line, tmp_path):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(HOOK.format(signal=name))], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=ENV, preexec_fn=interactive_sigint)
    assert (done.returncode, done.stderr, done.stdout) == (status, line, "")


def test_an_ignored_sigint_stays_ignored(tmp_path):
    # A background job of a non-interactive shell has SIGINT ignored; a Ctrl-C meant for the
    # foreground must not stop it (Python keeps SIG_IGN too), so the run completes.
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(HOOK.format(signal="SIGINT"))], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=ENV,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert (done.returncode, done.stderr) == (0, "")
    assert "fitted order (linear)" in done.stdout


def test_version_imports_no_torch(tmp_path):
    script = "import sys; from diffsde.__main__ import main; main(['--version']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=ENV, preexec_fn=interactive_sigint)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"diffsde {diffsde.__version__}\nFalse\n"


def test_the_diffsde_script_runs_the_light_entry_point():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["diffsde"].split(":")
    assert (module, function) == ("diffsde.__main__", "main")


def test_import_diffsde_is_lazy_and_exports_every_name(tmp_path):
    script = "import sys, diffsde; print('torch' in sys.modules, 'diffsde.samplers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=ENV, preexec_fn=interactive_sigint)
    assert done.stdout == "False False\n", done.stderr
    from diffsde import TimeGrid, sample, toys  # noqa: F401  (the module __getattr__ answers `from ... import`)
    for name in diffsde.__all__:  # each name is the object its own module defines
        home = diffsde._HOME[name]
        module = importlib.import_module(f"diffsde.{home or name}")
        assert getattr(diffsde, name) is (getattr(module, name) if home else module)
    assert set(diffsde.__all__) <= set(dir(diffsde))
    assert diffsde.nets is importlib.import_module("diffsde.nets")  # any submodule, on first use
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        diffsde.no_such_name


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_real_kill_of_a_training_run_leaves_no_folder(signum, status, tmp_path):
    # End to end, as `kill PID` does it: a long training run stopped once its temporary folder exists.
    command = [sys.executable, "-m", "diffsde", "train", "--train-steps", "1000000", "--batch-size", "16",
               "--hidden", "8", "--no-progress", "--out", str(tmp_path / "t")]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV,
                             preexec_fn=interactive_sigint)
    try:
        while not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert (child.returncode, err) == (status, f"diffsde train: stopped by {signal.Signals(signum).name}\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_stop_signal_after_the_work_is_done_is_one_line(tmp_path):
    # The script's handlers stay to the end: a Ctrl-C while Python shuts down is one line too.
    script = textwrap.dedent("""
        import os, signal, sys, time
        from diffsde.__main__ import main
        sys.argv = ["diffsde", "limit", "--n", "100", "1000"]
        status = main()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # the handler runs (in the main thread) within the sleep and ends it
        sys.exit(status)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=ENV, preexec_fn=interactive_sigint)
    assert (done.returncode, done.stderr) == (130, "diffsde: interrupted\n")
    assert "fitted order (linear)" in done.stdout  # flushed before the exit
