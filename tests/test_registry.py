"""Registries with plugin packages: teacher kinds and DFKD methods are one module each; config
validation, the bench grid and the CLI read the names from there (without importing torch)."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from core.config import Config, load_config
from core.dfkd.base import SYNTHESIZERS, Synthesizer
from core.errors import BadInput
from core.experiments.bench import Suite
from core.registry import Registry, plugin_names
from core.teachers.base import TEACHER_KINDS, TeacherKind

ROOT = Path(__file__).resolve().parents[1]


def test_plugin_names_are_the_modules_of_the_package() -> None:
    assert plugin_names("core.teachers.kinds") == ["cuti", "ntl-source", "ntl-target", "sl"]
    assert plugin_names("core.dfkd.methods") == ["cmi", "dfq"]


@pytest.mark.parametrize(("registry", "base"), [(TEACHER_KINDS, TeacherKind), (SYNTHESIZERS, Synthesizer)])
def test_every_plugin_registers_its_own_name(registry: Registry, base: type) -> None:
    for name in plugin_names(registry.plugins):
        cls = registry.get(name)
        assert issubclass(cls, base) and cls is not base, name
    assert registry.names() == plugin_names(registry.plugins)


def test_config_and_bench_accept_exactly_the_registered_names() -> None:
    kinds = typing.get_args(Config.model_fields["teacher"].annotation.model_fields["kind"].annotation)
    methods = typing.get_args(Config.model_fields["dfkd"].annotation.model_fields["method"].annotation)
    assert list(kinds) == TEACHER_KINDS.names() and list(methods) == SYNTHESIZERS.names()
    suite = Suite(teachers=TEACHER_KINDS.names(), methods=SYNTHESIZERS.names())
    assert suite.teachers == TEACHER_KINDS.names()


@pytest.mark.parametrize(("override", "valid"), [
    ("teacher.kind=vgg-ntl", "'cuti', 'ntl-source', 'ntl-target' or 'sl'"),
    ("dfkd.method=dafl", "'cmi' or 'dfq'"),
])
def test_unknown_names_are_one_line_errors_listing_the_valid_ones(override: str, valid: str) -> None:
    with pytest.raises(BadInput) as info:
        load_config(None, [override])
    assert valid in info.value.one_line() and override.partition("=")[0] in info.value.one_line()
    with pytest.raises(ValueError, match="cmi"):
        Suite(methods=["dafl"])


@pytest.mark.parametrize(("registry", "field", "valid"), [
    (TEACHER_KINDS, "teacher.kind", "known: cuti, ntl-source, ntl-target, sl"),
    (SYNTHESIZERS, "dfkd.method", "known: cmi, dfq"),
])
def test_registry_lookup_errors_list_the_valid_names(registry: Registry, field: str, valid: str) -> None:
    with pytest.raises(BadInput) as info:
        registry.get("nope", field=field)
    assert info.value.field == field and valid in str(info.value)


def test_a_plugin_module_that_does_not_register_its_name_is_an_error() -> None:
    """``core.errors`` is a module of the package ``core`` but registers nothing."""
    reg: Registry[object] = Registry("thing", plugins="core")
    assert "errors" in reg.names()
    with pytest.raises(ValueError, match="core.errors does not register thing 'errors'"):
        reg.get("errors")


def test_registering_a_name_twice_is_refused() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)


def test_config_knows_the_names_without_importing_torch() -> None:
    code = ("import sys; from core.config import Config; c = Config(); "
            "print(c.teacher.kind, c.dfkd.method, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ntl-target", "dfq", "False"]
