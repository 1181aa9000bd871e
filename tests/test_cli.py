"""The command line's handling of an interrupt: exit status 130 and a hint that fits the
command."""

import pytest

import numpyro_slt.cli as cli


@pytest.mark.parametrize(("command", "argv", "hint"), [
    ("_study", ["study"], "--resume"),
    ("_train", ["train"], "same --work"),
    ("_calibrate", ["calibrate"], "start it again"),
])
def test_an_interrupt_gives_status_130_and_the_commands_own_hint(command, argv, hint,
                                                                 monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, command, interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and hint in err
    if command != "_study":
        assert "--resume" not in err
