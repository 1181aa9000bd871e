"""Fuzzing the configuration loaders and the command line with hypothesis.

Whatever a user writes into a JSON config or onto the command line, the outcome is either a valid
object / a normal run, or a ValueError (exit status 1 with one line on the CLI, 2 for argparse
usage errors): never another exception, never a traceback without ``--debug``.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpyro_slt.cli import main
from numpyro_slt.nn import TrainConfig, TransformerConfig
from numpyro_slt.nn.default import DefaultRecipe
from numpyro_slt.study import StudyConfig

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8)


def _objects(cls):
    names = [f for f in cls.__dataclass_fields__]
    keys = st.one_of(st.sampled_from(names), st.text(max_size=8))
    return st.dictionaries(keys, json_values, max_size=6)


@pytest.mark.parametrize("cls", [StudyConfig, TrainConfig, TransformerConfig, DefaultRecipe])
def test_config_loaders_accept_or_raise_value_error(cls):
    @settings(max_examples=150, deadline=None)
    @given(_objects(cls))
    def check(data):
        try:
            loaded = cls.from_dict(data)
        except ValueError:
            return
        assert isinstance(loaded, cls)
        assert cls.from_dict(json.loads(json.dumps(loaded.to_dict()))) == loaded

    check()


flags = st.sampled_from([
    "study", "train", "--quick", "--out", "--model", "--config", "--components", "--chains",
    "--draws", "--seed", "--resume", "--no-progress", "--recipe", "--work", "1:3", "embed",
    "0", "-1", "3", "abc", "9:9", "",
])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(flags, max_size=7), _objects(StudyConfig))
def test_cli_never_crashes(tmp_path, capsys, argv, config):
    """Every argv ends in exit status 0 (help), 1 (one-line error) or 2 (usage error); the model
    folder is missing, so no run gets as far as sampling or training."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    argv = [x for a in argv for x in ([a, str(path)] if a == "--config" else [a])]
    if argv[:1] == ["train"]:  # a valid recipe would train: name a recipe file that is missing
        argv = [*argv, "--recipe", str(tmp_path / "missing.json")]
    else:  # a valid config would run a study: name a model folder that is missing
        argv = [*argv, "--model", str(tmp_path / "no-model")]
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    assert code in (0, 1, 2), code
    if code == 1:
        assert captured.err.startswith("numpyro-slt") and captured.err.count("\n") == 1
        assert "Traceback" not in captured.err
