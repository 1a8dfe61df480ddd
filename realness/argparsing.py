"""Command-line flags from dataclasses, with defaults from a YAML file (`--config`) that flags override.

Each field becomes `--field_name` (underscores kept, dashes accepted), its help text taken from
`metadata["help"]` and its default printed. Booleans are `--flag`, `--flag true|false` or `--no_flag`; tuples and lists take several
values. A field whose metadata has `positional=True` may also be given bare (`prog VALUE`).
Kept here rather than `HfArgumentParser` because CORE's config uses tuple and optional fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_MISSING = dataclasses.MISSING
_POSITIONAL = "__positional"


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _unwrap(tp) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return tp, False


def _coerce(value: Any, hint) -> Any:
    """A YAML value as the field's type, with what a flag would accept (`"false"` for a boolean, `"8"` for
    an int); raises ValueError saying what was expected."""
    tp, optional = _unwrap(hint)
    if value is None:
        if optional:
            return None
        raise ValueError("expected a value, got null")
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        inner = ([a for a in typing.get_args(tp) if a is not Ellipsis] or [str])[0]
        items = value if isinstance(value, (list, tuple)) else [value]
        coerced = [_coerce(v, inner) for v in items]
        return tuple(coerced) if origin is tuple else coerced
    if tp is bool:
        if isinstance(value, bool):
            return value
        try:
            return _bool(value)
        except argparse.ArgumentTypeError:
            raise ValueError(f"expected true or false, got {value!r}") from None
    if tp in (int, float):
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            raise ValueError(f"expected {'an integer' if tp is int else 'a number'}, got {value!r}")
        try:
            number = float(value)
            if tp is int and not number.is_integer():
                raise ValueError
            return int(number) if tp is int else number
        except (TypeError, ValueError):
            raise ValueError(f"expected {'an integer' if tp is int else 'a number'}, got {value!r}") from None
    if tp is str:
        if isinstance(value, (list, dict)):
            raise ValueError(f"expected text, got {value!r}")
        return str(value)
    return value


class _Deprecated(argparse.Action):
    """A hidden old spelling of a flag: it still works, with one warning naming the new one."""

    def __init__(self, *args, new: str = "", convert=None, **kwargs):
        self.new, self.convert = new, convert
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import logging

        logging.getLogger("realness").warning("%s is deprecated and will be removed in the next release; use %s",
                                              option_string, self.new)
        value = self.const if values is None else values
        setattr(namespace, self.dest, self.convert(value) if self.convert and isinstance(value, str) else value)


VERBOSE_HELP = "Also the libraries' log lines, and a traceback on an error (default: off)"


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, group: str | None = None) -> None:
    """Add one flag per field of dataclass `cls`."""
    target = parser.add_argument_group(group or cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap(hints[f.name])
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None
        )
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        origin = typing.get_origin(tp)
        if origin in (tuple, list):
            inner = [a for a in typing.get_args(tp) if a is not Ellipsis] or [str]
            kwargs.update(nargs="+", type=inner[0])
        elif tp is bool:  # `--flag`, `--flag true|false`, `--no_flag`
            kwargs.update(type=_bool, metavar="{true,false}", nargs="?", const=True)
        elif tp in (int, float, str):
            kwargs.update(type=tp)
        if "const" in f.metadata:  # `--flag` alone means `--flag CONST`
            kwargs.update(nargs="?", const=f.metadata["const"])
        required = f.default is _MISSING and f.default_factory is _MISSING
        help_text = f.metadata.get("help", "")
        help_text += " (required)" if required else f" (default: {default})"
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        target.add_argument(*names, help=help_text, **kwargs)
        for old in f.metadata.get("aliases", ()):  # old spellings, kept for one release
            spellings = [f"--{old}"] + ([f"--{old.replace('_', '-')}"] if "_" in old else [])
            alias = {k: v for k, v in kwargs.items() if k not in ("type", "metavar")}
            target.add_argument(*spellings, action=_Deprecated, new=names[0], convert=kwargs.get("type"),
                                help=argparse.SUPPRESS, **alias)
        if tp is bool:
            negated = [f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}"]
            target.add_argument(*negated, dest=f.name, action="store_const", const=False, default=argparse.SUPPRESS,
                                help=f"same as --{f.name} false")
        if f.metadata.get("positional"):  # also accepted as a bare argument: `prog VALUE` = `prog --name VALUE`
            extra = {k: v for k, v in kwargs.items() if k not in ("dest", "nargs")}
            target.add_argument(f"{f.name}{_POSITIONAL}", nargs="?", metavar=f.name.upper(),
                                help=f"same as --{f.name}", **extra)


def parse_dataclasses(
    classes: Sequence[type], argv: Sequence[str] | None = None, description: str | None = None, prog: str | None = None
) -> tuple:
    """Parse `argv` into one instance per dataclass; `--config FILE.yaml` supplies defaults."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="YAML file whose keys set defaults; flags override it (default: "
                                                    "none)")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)  # read by realness.cli.main
    for cls in classes:
        add_dataclass_arguments(parser, cls)
    args = vars(parser.parse_args(argv))
    for key in [k for k in args if k.endswith(_POSITIONAL)]:
        args[key[: -len(_POSITIONAL)]] = args.pop(key)
    values: dict[str, Any] = {}
    if args.get("config"):
        import yaml

        config = Path(args["config"])
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except OSError as err:
            parser.error(f"--config {config}: cannot be read ({err.strerror or err})")
        except yaml.YAMLError as err:
            parser.error(f"--config {config}: not valid YAML ({str(err).splitlines()[0]})")
        if not isinstance(loaded, dict):
            parser.error(f"--config {config}: expected a mapping of option names to values, got {type(loaded).__name__}")
        hints = {f.name: typing.get_type_hints(cls)[f.name] for cls in classes for f in dataclasses.fields(cls)}
        unknown = sorted(set(map(str, loaded)) - set(hints))
        if unknown:
            parser.error(f"{args['config']}: unknown key(s) {unknown}")
        for key, value in loaded.items():
            try:
                values[key] = _coerce(value, hints[key])
            except ValueError as err:
                parser.error(f"--config {config}: key {key}: {err}")
    values.update({k: v for k, v in args.items() if k not in ("config", "verbose")})
    out = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in values and f.default is _MISSING and f.default_factory is _MISSING]
        if missing:
            parser.error(f"missing required option(s): {', '.join('--' + m for m in missing)}")
        out.append(cls(**{k: v for k, v in values.items() if k in names}))
    return tuple(out)
