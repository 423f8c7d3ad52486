"""The CLI's progress helper: steps drawn on stderr, one plain line per finished step where
stderr is not a terminal, nothing with --quiet, and stdout left alone."""

from __future__ import annotations

import pytest

from netadapt_cli.common import commentary
from netadapt_cli.progress import Bars


def test_finished_steps_leave_one_line_each_on_stderr(capsys: pytest.CaptureFixture) -> None:
    with Bars() as bars:
        for epoch in range(1, 4):
            bars("pretraining", epoch, 3, f"epoch {epoch}/3, loss {1 / epoch:.3f}")
        count = bars.counter("measuring 2 networks", 4)
        count(2, "pass 1/2")
        count(2, "pass 2/2")
        bars("writing the report", 0, None)  # a spinner: no total until it ends
        bars("writing the report", 1, 1)
        bars("stopped short", 1, 5)
        bars.end("stopped short")
        bars.end("never started")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert [ln.split(" in ")[0] for ln in lines] == [
        "pretraining 3/3: epoch 3/3, loss 0.333", "measuring 2 networks 4/4: pass 2/2",
        "writing the report 1/1", "stopped short 1/5"]
    assert all(ln.endswith(" s") for ln in lines)


def test_quiet_draws_nothing(capsys: pytest.CaptureFixture) -> None:
    with Bars(quiet=True) as bars:
        bars("pretraining", 3, 3, "epoch 3/3")
        bars.counter("sweeping", 10)(10)
        bars.end("sweeping")
    assert capsys.readouterr() == ("", "")


def test_commentary_goes_where_the_options_say(capsys: pytest.CaptureFixture) -> None:
    commentary()("iteration 1: target 0.5 ms")
    assert capsys.readouterr() == ("iteration 1: target 0.5 ms\n", "")
    commentary(as_json=True)("iteration 1: target 0.5 ms")  # stdout is the JSON's
    assert capsys.readouterr() == ("", "iteration 1: target 0.5 ms\n")
    say = commentary(quiet=True)
    say("iteration 1: target 0.5 ms")
    say("warning: [x] has no calibration")  # warnings stay, markup-free
    assert capsys.readouterr() == ("", "warning: [x] has no calibration\n")
