"""Progress with the time left for one long, silent step: the estimate, the ticks, the learned rate."""

from __future__ import annotations

import json
import threading
import time

import pytest

from scaoed_deploy.cli.common import progress_steps
from scaoed_deploy.util import eta


def _until(predicate, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_long_step_ticks_with_the_time_left_then_learns_this_machines_rate(tmp_path, monkeypatch):
    monkeypatch.setenv("SCAOED_DEPLOY_CACHE", str(tmp_path))
    said: list[str] = []
    ticks: list[str] = []

    class Step:
        def __call__(self, message):
            said.append(message)

        def tick(self, message):
            ticks.append(message)

    nodes = 1000
    default = eta.DEFAULT_SECONDS_PER_UNIT["autocast"] * nodes**2  # 18 s (quadratic): far more than this body takes
    t0 = time.monotonic()
    with eta.long_step(Step(), "autocast", "converting", nodes, every=0.02):
        _until(lambda: len(ticks) >= 2)
        time.sleep(0.05)
    wall = time.monotonic() - t0
    assert said == [f"converting: 0 s spent, about {eta.clock(default)} left"]
    assert all(t.startswith("converting: ") and t.endswith(" left") for t in ticks)
    spent = int(ticks[-1].split(": ")[1].split(" s spent")[0])
    assert spent <= wall + 1 and ticks[-1].endswith(f"about {eta.clock(default - spent)} left")
    kept = json.loads((tmp_path / "step_times.json").read_text())
    assert kept["autocast"] == pytest.approx(wall / nodes**2, rel=0.5)  # the body's own wall time, per unit
    assert eta.expected_seconds("autocast", 2 * nodes) == pytest.approx(4 * wall, rel=0.5)  # AutoCast: quadratic
    assert eta.expected_seconds("nncf", 2 * nodes) == pytest.approx(2 * nodes * eta.DEFAULT_SECONDS_PER_UNIT["nncf"])


def test_past_its_estimate_a_step_says_so_and_a_failed_step_teaches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SCAOED_DEPLOY_CACHE", str(tmp_path))
    (tmp_path / "step_times.json").write_text(json.dumps({"nncf": 1e-6}))  # expects 1 ms for 1000 nodes
    ticks: list[str] = []
    with pytest.raises(RuntimeError), eta.long_step(ticks.append, "nncf", "quantizing", 1000, every=0.02):  # no .tick
        _until(lambda: any("longer than the 0 s expected" in t for t in ticks))
        raise RuntimeError("boom")
    assert json.loads((tmp_path / "step_times.json").read_text()) == {"nncf": 1e-6}
    (tmp_path / "step_times.json").write_text("{ not json")
    assert eta.expected_seconds("nncf", 100) == pytest.approx(100 * eta.DEFAULT_SECONDS_PER_UNIT["nncf"])
    assert eta.clock(59.4) == "59 s" and eta.clock(61) == "1 min 01 s" and eta.clock(-3) == "0 s"


def test_in_a_log_a_steps_ticks_print_one_line_in_30_seconds(capsys, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    with progress_steps() as step:  # stderr is captured: a log, not a terminal
        step("starting the work")
        for _ in range(10):  # 10 ticks over 27 s: none printed
            now[0] += 2.7
            step.tick("work: ticking")
        now[0] += 3.0
        step.tick("work: 30 s spent")
        step.tick("work: the same second")
        step("next step")  # a new step is always said
    lines = capsys.readouterr().err.split("\n")
    assert [ln.strip() for ln in lines if ln.strip()] == ["starting the work", "work: 30 s spent", "next step"]


def test_ticks_stop_with_the_step(tmp_path, monkeypatch):
    monkeypatch.setenv("SCAOED_DEPLOY_CACHE", str(tmp_path))
    with eta.long_step(lambda m: None, "ort-quantize", "x", 10, every=0.01):
        pass
    assert not [t for t in threading.enumerate() if t.name.startswith("long_step:")]


def test_a_long_step_inside_a_quieted_tool_still_says_its_time_in_a_log(capsys):
    """The tools (AutoCast, NNCF) run with their output silenced; the step's ticker thread must still be heard:
    its lines reach stderr while the tool's own prints, on stdout or stderr, do not."""
    import sys
    import time

    from scaoed_deploy.cli.common import Steps
    from scaoed_deploy.precision.quiet import quiet_tools
    from scaoed_deploy.util.eta import long_step

    step = Steps(lambda message: print(f"  {message}", file=sys.stderr))  # a log's step, every tick let through
    with long_step(step, "test-quiet", "quantizing", 10, every=0.05), quiet_tools("nncf"):
        print("a tool's progress bar", file=sys.stderr)
        print("a tool's chatter")
        time.sleep(0.4)
    out, err = capsys.readouterr()
    assert "tool" not in out + err
    ticks = [line for line in err.splitlines() if line.startswith("  quantizing: ")]
    assert len(ticks) >= 4 and "spent" in ticks[-1]  # the first line, then a tick every 0.05 s
