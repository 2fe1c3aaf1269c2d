"""Config precedence (TOML < env < --set) and one-line errors naming the source and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Config, config_from_toml_text, load_config, parse_overrides
from core.errors import BadInput


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text('[dfkd]\niterations = 12\nmethod = "cmi"\n[run]\nseed = 3\n')
    return path


def test_defaults_without_sources() -> None:
    cfg = load_config(None, [], environ={})
    assert cfg.data.id_domain == "mnist"
    assert cfg.data.ood_domain == "patched:mnist"
    assert cfg.teacher.kind == "ntl-target"


def test_precedence_toml_env_set(preset: Path) -> None:
    assert load_config(preset, [], environ={}).dfkd.iterations == 12
    env = {"ATESC_DFKD__ITERATIONS": "40", "ATESC_RUN__SEED": "9"}
    cfg = load_config(preset, [], environ=env)
    assert (cfg.dfkd.iterations, cfg.run.seed, cfg.dfkd.method) == (40, 9, "cmi")
    cfg = load_config(preset, ["dfkd.iterations=7", "atesc.enabled=false"], environ=env)
    assert (cfg.dfkd.iterations, cfg.run.seed, cfg.atesc.enabled) == (7, 9, False)


def test_set_values_are_typed_and_bare_words_are_strings() -> None:
    tree = parse_overrides(["a.b=3", "a.c=0.5", "a.d=true", "a.e=patched:mnist", 'a.f="x y"', "a.g=[1, 2]"])
    assert tree == {"a": {"b": 3, "c": 0.5, "d": True, "e": "patched:mnist", "f": "x y", "g": [1, 2]}}


@pytest.mark.parametrize(
    ("sets", "env", "where", "field"),
    [
        (["dfkd.iterations=-1"], {}, "--set", "dfkd.iterations"),
        (["dfkd.bogus=1"], {}, "--set", "dfkd.bogus"),
        (["run.seed=abc"], {}, "--set", "run.seed"),
        (["atesc.eps=nan"], {}, "--set", "atesc.eps"),
        ([], {"ATESC_DFKD__ITERATIONS": "x"}, "env ATESC_DFKD__ITERATIONS", "dfkd.iterations"),
        ([], {"ATESC_TEACHER__NOPE": "1"}, "env ATESC_TEACHER__NOPE", "teacher.nope"),
    ],
)
def test_bad_values_name_source_and_field(preset: Path, sets: list[str], env: dict, where: str, field: str) -> None:
    with pytest.raises(BadInput) as info:
        load_config(preset, sets, environ=env)
    assert info.value.where == where
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_errors_in_the_file_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[teacher]\nkind = 'banana'\n")
    with pytest.raises(BadInput) as info:
        load_config(bad, [], environ={})
    assert info.value.where == str(bad) and info.value.field == "teacher.kind"
    bad.write_text("[dfkd\n")
    with pytest.raises(BadInput, match="malformed TOML"):
        load_config(bad, [], environ={})
    bad.write_text("")
    with pytest.raises(BadInput, match="empty"):
        load_config(bad, [], environ={})
    with pytest.raises(BadInput, match="not found"):
        load_config(tmp_path / "missing.toml", [], environ={})


def test_round_trip_through_toml_ignores_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, ["dfkd.iterations=5", "run.dir=/tmp/x"], environ={})
    monkeypatch.setenv("ATESC_DFKD__ITERATIONS", "99")
    again = config_from_toml_text(cfg.to_toml())
    assert again == cfg
    assert isinstance(again, Config)


def test_malformed_set_syntax() -> None:
    with pytest.raises(BadInput, match="section.field=value"):
        parse_overrides(["novalue"])


def test_teacher_seed_defaults_to_run_seed_and_can_be_pinned() -> None:
    assert load_config(None, ["run.seed=4"], environ={}).teacher_seed == 4
    assert load_config(None, ["run.seed=4", "teacher.seed=0"], environ={}).teacher_seed == 0
