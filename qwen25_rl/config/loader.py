"""Load a stage config from YAML plus `key.sub=value` overrides, with errors people can act on.

An error names the file (or the command-line override) the bad value came from, the dotted
key path, and either the expected type or the closest valid key names.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from qwen25_rl.config.schema import STAGE_CONFIG_MODULES, STAGE_CONFIGS, StageConfig
from qwen25_rl.config.storage import resolve_config_paths, storage_root
from qwen25_rl.errors import UserValueError


def import_stage_modules() -> None:
    """Import the modules that register stage configs (kept lazy: they pull in torch)."""
    import importlib

    for name in STAGE_CONFIG_MODULES:
        importlib.import_module(name)


class ConfigError(UserValueError):
    """A config file or override is invalid. `problems` holds one readable line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


# ---------------------------------------------------------------------------------------------
# overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optimizer.lr=3e-4` -> (["optimizer", "lr"], 0.0003). Values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError("(command line)", [f"override {text!r} is not of the form key.sub=value"])
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError("(command line)", [f"override {text!r} has an empty key part"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError("(command line)", [f"override {text!r}: value is not valid YAML ({e})"]) from e
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, str]:
    """Set each override into `data` in place; return {dotted key: override text} for error reports."""
    origin: dict[str, str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        set_dotted(data, parts, value, source="(command line)", what=f"override {text!r}")
        origin[".".join(parts)] = text
    return origin


def set_dotted(data: dict[str, Any], parts: list[str], value: Any, *, source: str, what: str) -> None:
    """data[a][b][c] = value for parts [a, b, c], creating missing sections."""
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(source, [f"{what}: {'.'.join(parts[: i + 1])} is a value, not a section"])
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# schema introspection for suggestions


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as `Foo`, `Foo | None`, `Optional[Foo]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_class(arg)
            if found is not None:
                return found
    return None


def _section_at(schema: type[BaseModel], path: tuple[str, ...]) -> type[BaseModel] | None:
    cls: type[BaseModel] | None = schema
    for part in path:
        if cls is None or part not in cls.model_fields:
            return None
        cls = _model_class(cls.model_fields[part].annotation)
    return cls


def all_key_paths(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key path the schema accepts (sections and leaves)."""
    out: list[str] = []
    for name, field in schema.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        sub = _model_class(field.annotation)
        if sub is not None:
            out.extend(all_key_paths(sub, path + "."))
    return out


def _suggest(schema: type[BaseModel], loc: tuple[str, ...]) -> str:
    parent = _section_at(schema, loc[:-1])
    bad = loc[-1]
    hints: list[str] = []
    if parent is not None:
        names = list(parent.model_fields)
        close = difflib.get_close_matches(bad, names, n=3, cutoff=0.5)
        if close:
            prefix = ".".join(loc[:-1])
            hints.append("did you mean " + " or ".join(repr(f"{prefix}.{c}" if prefix else c) for c in close) + "?")
        else:
            # The key may belong to another section (e.g. `lr` at top level -> `optimizer.lr`).
            elsewhere = [p for p in all_key_paths(schema) if p.rsplit(".", 1)[-1] == bad]
            if elsewhere:
                hints.append("did you mean " + " or ".join(repr(p) for p in elsewhere) + "?")
        hints.append("valid keys here: " + ", ".join(names))
    return "; ".join(hints)


_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_parsing": "a boolean (true or false)",
    "bool_type": "a boolean (true or false)",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping (a config section)",
    "model_attributes_type": "a mapping (a config section)",
}


def _describe(err: dict[str, Any], schema: type[BaseModel]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return f"unknown key {key!r}; {_suggest(schema, loc)}"
    if kind in _EXPECTED:
        return f"{key}: expected {_EXPECTED[kind]}, got {got!r} ({type(got).__name__})"
    if kind == "literal_error":
        return f"{key}: expected one of {err['ctx']['expected']}, got {got!r}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if isinstance(got, dict):  # a section-level rule: its message names the keys; the whole section is noise
        return f"{key}: {err['msg'].removeprefix('Value error, ')}"
    return f"{key}: {err['msg']} (got {got!r})"


# ---------------------------------------------------------------------------------------------
# loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, syntax error or non-mapping raises ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), ["file not found"])
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(str(p), [f"not valid YAML: {e}"]) from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(p), [f"top level must be a mapping of sections, got {type(data).__name__}"])
    return data


def stage_schema(stage: Any, source: str) -> type[StageConfig]:
    if stage not in STAGE_CONFIGS:
        import_stage_modules()
    if stage in STAGE_CONFIGS:
        return STAGE_CONFIGS[stage]
    close = difflib.get_close_matches(str(stage), list(STAGE_CONFIGS), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ConfigError(source, [f"stage: unknown stage {stage!r}{hint} known stages: {', '.join(sorted(STAGE_CONFIGS))}"])


def validate_config(
    data: dict[str, Any],
    source: str,
    schema: type[StageConfig] | None = None,
    override_origin: dict[str, str] | None = None,
) -> StageConfig:
    """Validate a raw mapping against its stage schema and turn pydantic errors into ours."""
    if schema is None:
        schema = stage_schema(data.get("stage", "base"), source)
    try:
        config = schema.model_validate(data)
    except ValidationError as e:
        origin = override_origin or {}
        problems = []
        for err in e.errors():
            line = _describe(err, schema)
            key = ".".join(str(p) for p in err["loc"])
            if key in origin:
                line += f" (from command-line override {origin[key]!r})"
            problems.append(line)
        raise ConfigError(source, problems) from None
    # Relative paths resolve against the storage root here, once, so the saved config and every
    # message name the absolute folders a later job (or the next stage) will find.
    resolve_config_paths(config, storage_root(config.logging.storage_path))
    return config


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    schema: type[StageConfig] | None = None,
) -> StageConfig:
    """Load `path` (or only defaults when None), apply overrides, validate.

    `schema` forces a config class (a stage's CLI passes its own); otherwise the file's
    `stage:` key selects one from the registry.
    """
    data = read_yaml(path) if path is not None else {}
    origin = apply_overrides(data, list(overrides or []))
    source = str(path) if path is not None else "(defaults)"
    if schema is not None and "stage" in data and data["stage"] != schema.model_fields["stage"].default:
        raise ConfigError(
            source, [f"stage: this command runs stage {schema.model_fields['stage'].default!r}, the file says {data['stage']!r}"]
        )
    return validate_config(data, source, schema, origin)


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, in schema order (what `config show` prints and runs save)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)
