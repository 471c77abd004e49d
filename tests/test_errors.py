"""Typed errors: one-line messages, the offending value carried as attributes, the CLI's exit codes."""
from __future__ import annotations

import pickle

import pytest

from tessera.cli import main
from tessera.errors import (CancelledError, ChecksumError, ImageReadError, InputError, ModelError, OptionError,
                            OutputError, ResourceError, TesseraError, look_up_option)


def test_look_up_option_carries_the_option_the_value_and_the_choices():
    with pytest.raises(OptionError, match=r"unknown colour 'gren'; did you mean 'green'\? \(choose from red, green\)"
                       ) as caught:
        look_up_option("gren", ["red", "green"], "colour")
    error = caught.value
    assert (error.option, error.value, error.expected) == ("colour", "gren", "red, green")
    assert look_up_option("red", ("red", "green"), "colour") == "red"


def test_a_schema_option_error_carries_the_field_the_value_and_what_it_accepts():
    from tessera.options import UpscaleOptions, parse_options

    with pytest.raises(OptionError, match=r"^option blend: Input should be 'auto', 'crop' or 'feather' \(got 'feathr'\)$"
                       ) as caught:
        parse_options(UpscaleOptions, {"blend": "feathr"})
    assert (caught.value.option, caught.value.value) == ("blend", "feathr")
    assert caught.value.expected == "Input should be 'auto', 'crop' or 'feather'"
    with pytest.raises(OptionError, match=r"^unknown option 'colour'$") as caught:
        parse_options(UpscaleOptions, {"colour": "red"})
    assert (caught.value.option, caught.value.value) == ("colour", "red") and "blend" in caught.value.expected


def test_a_bad_quality_carries_its_value():
    from tessera.image.write import check_quality

    with pytest.raises(OptionError, match="quality must be an integer from 1 to 100, got 0") as caught:
        check_quality(0)
    assert (caught.value.option, caught.value.value, caught.value.expected) == (
        "quality", 0, "an integer from 1 to 100")


def test_a_plain_message_keeps_working_with_empty_attributes():
    error = OptionError("scale must be positive,\n   got -1")
    assert str(error) == "scale must be positive, got -1"  # one line, always
    assert (error.option, error.value, error.expected) == (None, None, None)
    assert isinstance(error, ValueError) and isinstance(error, InputError)


@pytest.mark.parametrize("kind", [InputError, OptionError, OutputError, ImageReadError])
def test_the_values_survive_pickling(kind):
    """Errors cross process pools and Ray workers: the attributes come back with the message."""
    error = pickle.loads(pickle.dumps(kind("bad tile 7", option="tile", value=7, expected="at least 16")))
    assert type(error) is kind and str(error) == "bad tile 7"
    assert (error.option, error.value, error.expected) == ("tile", 7, "at least 16")


def test_exit_codes_follow_the_documented_mapping():
    """errors.py and the CLI's docs: 2 for input, options and models, 4 for resources, 130 when cancelled."""
    assert InputError.exit_code == OptionError.exit_code == OutputError.exit_code == 2
    assert ModelError.exit_code == ChecksumError.exit_code == 2
    assert ResourceError.exit_code == 4 and CancelledError.exit_code == 130 and TesseraError.exit_code == 1


def test_a_model_error_exits_2_from_the_command_line(tmp_path, capsys):
    assert main(["models", "pull", "no-such-model", "--model-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tessera: error: ") and "unknown model" in err and len(err.strip().splitlines()) == 1
