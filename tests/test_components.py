"""Components, typed parameters and config files."""

from __future__ import annotations

import pytest

from lossbench import Component, Param
from lossbench.config import component_choice, load_config, parse_assignments
from lossbench.errors import ConfigError, ParameterError


def make(**kw):
    base = dict(kind="loss", name="toy", summary="A toy loss", factory=lambda **p: p)
    base.update(kw)
    return Component(**base)


PARAMS = (
    Param("gamma", float, 2.0, "focal exponent"),
    Param("bins", int, 20, "number of bins"),
    Param("squared", bool, False, "square the denominator"),
    Param("mode", str, "sigmoid", "activation", choices=("sigmoid", "softmax")),
    Param("channels", tuple, (16, 32), "widths", item=int),
)


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        ("gamma", "0", 0.0), ("gamma", 1, 1.0), ("gamma", "1e-3", 0.001),
        ("bins", "7", 7), ("bins", 7.0, 7),
        ("squared", "true", True), ("squared", "0", False), ("squared", "No", False), ("squared", True, True),
        ("mode", "softmax", "softmax"),
        ("channels", "4,8,16", (4, 8, 16)), ("channels", [4, 8], (4, 8)), ("channels", "(2, 4)", (2, 4)),
    ],
)
def test_param_coercion(name, raw, expected):
    comp = make(params=PARAMS)
    assert comp.resolve({name: raw})[name] == expected


@pytest.mark.parametrize(
    "name, raw",
    [("gamma", "two"), ("bins", "2.5"), ("bins", True), ("squared", "maybe"), ("mode", "tanh"), ("channels", "4,x")],
)
def test_param_bad_values(name, raw):
    with pytest.raises(ParameterError, match=name):
        make(params=PARAMS).resolve({name: raw})


def test_unknown_parameter_suggests():
    with pytest.raises(ParameterError, match=r"did you mean 'gamma'"):
        make(params=PARAMS).resolve({"gama": 1})


def test_defaults_and_build_pass_extra():
    comp = make(params=PARAMS)
    built = comp.build({"gamma": "0.5"}, extra=1)
    assert built == {"gamma": 0.5, "bins": 20, "squared": False, "mode": "sigmoid", "channels": (16, 32), "extra": 1}


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"name": "Bad-Name"}, "lowercase"),
        ({"summary": ""}, "one-line summary"),
        ({"summary": "two\nlines"}, "one-line summary"),
        ({"kind": "metric"}, "kind"),
        ({"factory": "no_colon"}, "factory"),
        ({"params": (Param("a", int, 1, ""), Param("a", int, 2, ""))}, "twice"),
    ],
)
def test_component_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        make(**kw)


def test_string_factory_is_imported_lazily_and_reports_failures():
    comp = make(factory="json:dumps")
    assert comp.build(None, obj=[1]) == "[1]"
    broken = make(factory="lossbench_no_such_module:thing")
    with pytest.raises(Exception, match="cannot import 'lossbench_no_such_module:thing'"):
        broken.build()


def test_parse_assignments():
    assert parse_assignments(["gamma=0", "lambda-dice = 2"]) == {"gamma": "0", "lambda_dice": "2"}
    with pytest.raises(ParameterError, match="name=value"):
        parse_assignments(["gamma"])


def test_config_file_merging(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[loss]\nname = "l1dfl"\nepsilon = 0.1\ngamma = 0.0\n')
    config = load_config(cfg)
    assert component_choice(config, "loss", None, {"gamma": "1"}) == ("l1dfl", {"epsilon": 0.1, "gamma": "1"})
    # the file's parameters belong to the file's loss, not to another one named on the command line
    assert component_choice(config, "loss", "dl", {}) == ("dl", {})
    assert component_choice(config, "network", None, {}) == (None, {})


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[loss\nname=")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('loss = "l1dfl"\n')
    with pytest.raises(ConfigError, match=r"\[loss\] must be a table"):
        load_config(wrong)
