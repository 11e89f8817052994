import json

import pytest

from mclner.cli import main
from mclner.ops import available_impls


def test_ops_json_matches_available_impls(capsys):
    assert main(["ops", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == available_impls()


def test_ops_table_names_every_impl(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    for name in ("reference", "cpu", "triton", "cuda"):
        assert name in out


def test_help_lists_ops(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "ops" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out
