"""A form generated from the pydantic config tree: field types, bounds and descriptions drive it.

bool -> Switch, Literal -> Select, list of Literal -> comma-separated Input, everything else ->
Input. Each edit is validated against the section model at once (``validate_assignment``), and
the error is shown under the field.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Collapsible, Input, Label, Select, Static, Switch

from core.config import Config

HIDDEN = {"run.dir", "run.runs_root"}  # the app decides where runs go


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def bounds_text(info: FieldInfo) -> str:
    parts = []
    for m in info.metadata:
        if isinstance(m, Ge):
            parts.append(f">= {m.ge}")
        elif isinstance(m, Gt):
            parts.append(f"> {m.gt}")
        elif isinstance(m, Le):
            parts.append(f"<= {m.le}")
        elif isinstance(m, Lt):
            parts.append(f"< {m.lt}")
        elif isinstance(m, MinLen):
            parts.append(f"len >= {m.min_length}")
        elif isinstance(m, MaxLen):
            parts.append(f"len <= {m.max_length}")
    return ", ".join(parts)


def field_help(section: str, name: str, info: FieldInfo) -> str:
    ann, optional = _unwrap_optional(info.annotation)
    kind = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
    if get_origin(ann) is Literal:
        kind = " | ".join(str(a) for a in get_args(ann))
    extra = bounds_text(info)
    text = f"{section}.{name} ({kind}{', optional' if optional else ''}{'; ' + extra if extra else ''})"
    if info.description:
        text += f": {info.description}"
    return text


def fmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(base: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, preset value, new value)]`` for every field that differs."""
    a = flatten(base.model_dump(mode="json"))
    b = flatten(new.model_dump(mode="json"))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in HIDDEN]


class FieldRow(Vertical):
    """Label, input widget and inline error of one config field."""

    DEFAULT_CSS = """
    FieldRow { height: auto; }
    FieldRow > Horizontal { height: auto; }
    FieldRow .field-name { width: 18; padding: 0 1 0 0; text-overflow: ellipsis; }
    FieldRow Input, FieldRow Select { width: 1fr; }
    FieldRow Switch { width: auto; }
    FieldRow .field-error { color: $error; padding-left: 18; height: auto; display: none; }
    FieldRow.-invalid .field-error { display: block; }
    """

    def __init__(self, section: str, name: str, info: FieldInfo, value: Any) -> None:
        super().__init__(id=f"row-{section}-{name}")
        self.section = section
        self.fname = name
        self.info = info
        self.key = f"{section}.{name}"
        self.annotation, self.optional = _unwrap_optional(info.annotation)
        self.initial = value
        self.help = field_help(section, name, info)
        self.tooltip = self.help

    def compose(self) -> ComposeResult:
        ann = self.annotation
        wid = f"f-{self.section}-{self.fname}"
        with Horizontal():
            yield Label(self.fname, classes="field-name")
            if ann is bool:
                yield Switch(value=bool(self.initial), id=wid)
            elif get_origin(ann) is Literal:
                options = [(str(a), a) for a in get_args(ann)]
                yield Select(options, value=self.initial, allow_blank=self.optional, id=wid, compact=True)
            else:
                input_type = "text"
                if ann is int:
                    input_type = "integer"
                elif ann is float:
                    input_type = "number"
                placeholder = "(unset)" if self.optional else ""
                yield Input(value=fmt_value(self.initial), type=input_type, placeholder=placeholder, id=wid, compact=True)
        yield Static("", classes="field-error")

    def raw_value(self) -> Any:
        widget = self.query_one(f"#f-{self.section}-{self.fname}")
        if isinstance(widget, Switch):
            return widget.value
        if isinstance(widget, Select):
            return None if widget.value is Select.BLANK else widget.value
        text = widget.value.strip()
        if text == "" and self.optional:
            return None
        if get_origin(self.annotation) is list:
            return [part.strip() for part in text.split(",") if part.strip()]
        return text

    def set_error(self, message: str | None) -> None:
        self.set_class(message is not None, "-invalid")
        self.query_one(".field-error", Static).update(message or "")


class ConfigForm(VerticalScroll):
    """Edits a ``Config``; ``config`` is the current valid value, ``errors`` the invalid fields."""

    DEFAULT_CSS = """
    ConfigForm { height: 1fr; }
    ConfigForm Collapsible { padding: 0; }
    """

    class Changed(Message):
        def __init__(self, form: ConfigForm) -> None:
            super().__init__()
            self.form = form

        @property
        def control(self) -> ConfigForm:
            return self.form

    class FieldFocused(Message):
        def __init__(self, help_text: str) -> None:
            super().__init__()
            self.help_text = help_text

    def __init__(self, config: Config, **kwargs) -> None:
        super().__init__(**kwargs)
        self._config = config.model_copy(deep=True)
        self.errors: dict[str, str] = {}
        self.built: set[str] = set()  # sections whose fields exist (the others are built when expanded)

    @property
    def config(self) -> Config:
        return self._config

    OPEN_SECTIONS = 1  # sections expanded, and built, when the form opens (data: 4 fields)

    def compose(self) -> ComposeResult:
        for i, section in enumerate(Config.model_fields):
            with Collapsible(title=section, collapsed=i >= self.OPEN_SECTIONS, id=f"sec-{section}"):
                if i < self.OPEN_SECTIONS:
                    self.built.add(section)
                    yield from self._rows(section)

    def _rows(self, section: str) -> list[FieldRow]:
        model: BaseModel = getattr(self._config, section)
        return [
            FieldRow(section, name, info, getattr(model, name))
            for name, info in type(model).model_fields.items()
            if f"{section}.{name}" not in HIDDEN
        ]

    async def reveal(self, section: str) -> None:
        """Expand a section, building its fields the first time. All ~65 fields are ~400 widgets:
        building them before the first paint made the form take seconds to open."""
        collapsible = self.query_one(f"#sec-{section}", Collapsible)
        collapsible.collapsed = False
        if section not in self.built:
            self.built.add(section)
            await collapsible.query_one(Collapsible.Contents).mount_all(self._rows(section))

    @on(Collapsible.Expanded)
    async def _expanded(self, event: Collapsible.Expanded) -> None:
        await self.reveal(str(event.collapsible.id).removeprefix("sec-"))

    def load(self, config: Config) -> None:
        """Replace every value (choosing another preset)."""
        self._config = config.model_copy(deep=True)
        self.errors.clear()
        for row in self.query(FieldRow):
            value = getattr(getattr(self._config, row.section), row.fname)
            widget = self.query_one(f"#f-{row.section}-{row.fname}")
            with widget.prevent(Input.Changed, Switch.Changed, Select.Changed):
                if isinstance(widget, Switch):
                    widget.value = bool(value)
                elif isinstance(widget, Select):
                    widget.value = value if value is not None else Select.BLANK
                else:
                    widget.value = fmt_value(value)
            row.set_error(None)
        self.post_message(self.Changed(self))

    def _validate_row(self, row: FieldRow) -> None:
        self._apply(row.section, row.fname, row.raw_value(), row)

    def _apply(self, section: str, name: str, raw: Any, row: FieldRow | None = None) -> None:
        """Validate one value against its section model; keep it if valid, else record the error."""
        key = f"{section}.{name}"
        candidate = getattr(self._config, section).model_copy()
        try:
            setattr(candidate, name, raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], (dict, list)):
                msg += f" (got {err['input']!r})"
            self.errors[key] = msg
        else:
            self.errors.pop(key, None)
            setattr(self._config, section, candidate)
        if row is not None:
            row.set_error(self.errors.get(key))
        self.post_message(self.Changed(self))

    @on(Input.Changed)
    @on(Switch.Changed)
    @on(Select.Changed)
    def _changed(self, event: Message) -> None:
        event.stop()
        row = next((a for a in event.control.ancestors if isinstance(a, FieldRow)), None)
        if row is not None:
            self._validate_row(row)

    def on_descendant_focus(self, event) -> None:
        row = next((a for a in event.widget.ancestors_with_self if isinstance(a, FieldRow)), None)
        if row is not None:
            self.post_message(self.FieldFocused(row.help))

    def raw_value(self, key: str) -> Any:
        """What the field holds now, valid or not."""
        section, name = key.split(".", 1)
        if section not in self.built:
            return getattr(getattr(self._config, section), name)
        return self.query_one(f"#row-{section}-{name}", FieldRow).raw_value()

    def set_value(self, key: str, value: Any) -> None:
        """Set a field from code (tests, presets): ``form.set_value("dfkd.iterations", 4)``."""
        section, name = key.split(".", 1)
        if section not in self.built:  # no widget yet: validate straight into the config
            self._apply(section, name, value)
            return
        widget = self.query_one(f"#f-{section}-{name}")
        if isinstance(widget, (Switch, Select)):
            widget.value = value
        else:
            widget.value = fmt_value(value)


def load_preset(path: Path) -> Config:
    from core.config import load_config

    return load_config(path, environ={})
