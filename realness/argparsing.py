"""Command-line flags from dataclasses, with defaults from a YAML file (`--config`) that flags override: the one
way every `realness` command and `eval/` script reads its options.

Each field becomes `--field_name` (underscores kept, dashes accepted), its help text taken from
`metadata["help"]` and its default printed. Booleans are `--flag`, `--flag true|false` or `--no_flag`; tuples
and lists take several values. Field metadata:
    positional=True   also accepted bare (`prog VALUE`)
    const=X           `--flag` alone means `--flag X`
    choices=(...)     the values it takes
    default_help="…"  what --help says the default is, when its value alone would not say it
    flag="name"       the flag's (and YAML key's) name when it is not the field's: one word per idea across
                      commands (`--out`, `--describer`, `--clip`) while the Python field keeps its name
    aliases=(...)     old spellings, hidden, still read with a deprecation warning (kept for one release)
A field whose type is a dataclass is a **group**: its fields are `--PREFIX.name` flags and, in YAML, a nested
mapping under PREFIX (or dotted keys `PREFIX.name`); PREFIX is `metadata["prefix"]` or the field's name. With
`metadata["flat_aliases"]=True` the group's old flat flags and YAML keys (`--name`) are still read, with a
warning (a dict maps a field to its old name: `{"r": "lora_r"}`); `metadata["defaults"]`, a function of the
other parsed values, gives the group's starting point (CORE's preset). Kept here rather than
`HfArgumentParser` because CORE's config uses tuple and optional fields.
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

    def __init__(self, *args, new: str = "", convert=None, also: Sequence[str] = (), **kwargs):
        self.new, self.convert, self.also = new, convert, tuple(also)
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import logging

        logging.getLogger("realness").warning("%s is deprecated and will be removed in the next release; use %s",
                                              option_string, self.new)
        value = self.const if values is None else values
        value = self.convert(value) if self.convert and isinstance(value, str) else value
        for dest in (self.dest, *self.also):
            setattr(namespace, dest, value)


VERBOSE_HELP = "Also the libraries' log lines, and a traceback on an error (default: off)"


@dataclasses.dataclass
class _Leaf:
    key: str                 # dotted path of field names: "dream_config.source"
    flag: str                # dotted flag name without dashes: "dream.source"
    field: dataclasses.Field
    hint: Any
    flat: str | None = None  # the old flat name, for a group with flat_aliases
    owner: str = ""          # the dataclass that declares it (a shared option group: ServerOptions, RayOptions)


def _is_group(hint) -> bool:
    return dataclasses.is_dataclass(_unwrap(hint)[0])


def _leaves(cls: type, key: str = "", flag: str = "", flat: bool | dict = False) -> list[_Leaf]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _is_group(hints[f.name]):
            prefix = f.metadata.get("prefix", f.name)
            out += _leaves(_unwrap(hints[f.name])[0], f"{key}{f.name}.", f"{flag}{prefix}.",
                           flat or f.metadata.get("flat_aliases", False))
        else:
            owner = next((c for c in cls.__mro__ if f.name in c.__dict__.get("__annotations__", {})), cls)
            old = (flat.get(f.name) if isinstance(flat, dict) else f.name if flat else None) if flag else None
            name = f.metadata.get("flag", f.name)  # the command line's word for it, when not the field's
            out.append(_Leaf(f"{key}{f.name}", f"{flag}{name}", f, hints[f.name], old, owner.__name__))
    return out


def _spellings(name: str) -> list[str]:
    dashed = name.replace("_", "-")
    return [f"--{name}"] + ([f"--{dashed}"] if dashed != name else [])


def _default(f: dataclasses.Field):
    if f.default is not _MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not _MISSING else None


def _required(f: dataclasses.Field) -> bool:
    return f.default is _MISSING and f.default_factory is _MISSING


def _old_names(leaf: _Leaf) -> list[str]:
    """The leaf's old spellings, flag or YAML key: its aliases (inside its group), and for a group with flat
    aliases its old flat name and bare aliases."""
    group = leaf.flag.rpartition(".")[0]
    aliases = list(leaf.field.metadata.get("aliases", ()))
    olds = [f"{group}.{a}" if group else a for a in aliases] + ([leaf.flat] if leaf.flat else [])
    return olds + (aliases if leaf.flat and group else [])


def _also_keys(leaf: _Leaf) -> list[str]:
    """The other leaves (same group) an old spelling also sets (`alias_also`)."""
    group = leaf.key.rpartition(".")[0]
    return [f"{group}.{a}".lstrip(".") for a in leaf.field.metadata.get("alias_also", ())]


def _kwargs(leaf: _Leaf) -> dict[str, Any]:
    f, (tp, _) = leaf.field, _unwrap(leaf.hint)
    kwargs: dict[str, Any] = {"dest": leaf.key, "default": argparse.SUPPRESS}
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis] or [str]
        kwargs.update(nargs="+", type=inner[0])
    elif tp is bool:  # `--flag`, `--flag true|false`, `--no_flag`
        kwargs.update(type=_bool, metavar="{true,false}", nargs="?", const=True)
    elif tp in (int, float, str):
        kwargs.update(type=tp)
    if "const" in f.metadata:
        kwargs.update(nargs="?", const=f.metadata["const"])
    if "choices" in f.metadata:
        kwargs["choices"] = f.metadata["choices"]
    if tp is not bool:
        kwargs.setdefault("metavar", leaf.flag.rsplit(".", 1)[-1].upper())
    return kwargs


def _add_leaf(target, leaf: _Leaf, taken: set[str]) -> None:
    """The flag itself (and its bare positional form); `taken` collects every option string."""
    f, kwargs = leaf.field, _kwargs(leaf)
    shown = f.metadata.get("default_help", _default(f))
    help_text = f.metadata.get("help", "") + (" (required)" if _required(f) else f" (default: {shown})")
    help_text = help_text.replace("%", "%%")  # argparse formats help with %: "95%" must stay text
    names = _spellings(leaf.flag)
    target.add_argument(*names, help=help_text, **kwargs)
    taken.update(names)
    if f.metadata.get("positional"):  # also accepted as a bare argument: `prog VALUE` = `prog --name VALUE`
        extra = {k: v for k, v in kwargs.items() if k not in ("dest", "nargs", "metavar")}
        target.add_argument(f"{leaf.key}{_POSITIONAL}", nargs="?", metavar=leaf.flag.upper(),
                            help=f"same as --{leaf.flag}", **extra)


def _add_aliases(target, leaf: _Leaf, taken: set[str]) -> None:
    """`--no_flag` for a boolean and the old spellings, hidden; after every class's own flags, so an old
    spelling never takes a name another flag has."""
    kwargs = _kwargs(leaf)
    tp = _unwrap(leaf.hint)[0]
    for old in _old_names(leaf):  # old spellings, hidden, kept for one release
        spellings = [s for s in _spellings(old) if s not in taken]
        if spellings:
            alias = {k: v for k, v in kwargs.items() if k not in ("type", "metavar")}
            target.add_argument(*spellings, action=_Deprecated, new=f"--{leaf.flag}", convert=kwargs.get("type"),
                                also=_also_keys(leaf), help=argparse.SUPPRESS, **alias)
            taken.update(spellings)
    if tp is bool:
        negated = [s for s in dict.fromkeys([f"--no_{leaf.flag}", f"--no-{leaf.flag.replace('_', '-')}"]) if s not in taken]
        if negated:
            target.add_argument(*negated, dest=leaf.key, action="store_const", const=False,
                                default=argparse.SUPPRESS, help=f"same as --{leaf.flag} false")
            taken.update(negated)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type | Sequence[type], group: str | None = None,
                            taken: set[str] | None = None) -> list[_Leaf]:
    """Add one flag per field of the dataclass(es) `cls` (and of their groups, as `--prefix.name`): every
    class's own flags first, then the negations and old spellings that no flag has taken. Returns the leaves."""
    taken = set() if taken is None else taken
    targets: dict[str, Any] = {}
    placed = []
    for one in (cls if isinstance(cls, (list, tuple)) else [cls]):
        own_first = sorted(_leaves(one), key=lambda leaf: leaf.owner != one.__name__)  # shared groups after
        for leaf in own_first:
            title = group or leaf.owner or one.__name__
            if "." in leaf.flag:
                title = f"{title}: --{leaf.flag.rsplit('.', 1)[0]}.*"
            if title not in targets:
                targets[title] = parser.add_argument_group(title)
            _add_leaf(targets[title], leaf, taken)
            placed.append((targets[title], leaf))
    for target, leaf in placed:
        _add_aliases(target, leaf, taken)
    return [leaf for _, leaf in placed]


def _flatten_yaml(loaded: dict, leaves: list[_Leaf], warn) -> dict[str, Any]:
    """YAML keys as leaf keys: nested mappings under a group's prefix, dotted keys, and old flat keys."""
    by_flag = {leaf.flag: leaf for leaf in leaves}
    by_key = {leaf.key: leaf for leaf in leaves}
    by_old: dict[str, _Leaf] = {}
    for leaf in leaves:  # old spellings (`output_dir` for `out`, a group's flat `source`), as the flags have them
        for old in _old_names(leaf):
            if old not in by_flag:
                by_old.setdefault(old, leaf)
    out, unknown = {}, []

    def walk(mapping: dict, prefix: str) -> None:
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if name in by_flag and not (isinstance(value, dict) and any(f.startswith(name + ".") for f in by_flag)):
                out[by_flag[name].key] = (value, by_flag[name])
            elif isinstance(value, dict) and any(f.startswith(name + ".") for f in by_flag):
                walk(value, name + ".")
            elif name in by_old:
                leaf = by_old[name]
                warn(f"key {name} is deprecated and will be removed in the next release; use {leaf.flag}")
                for key in (leaf.key, *_also_keys(leaf)):
                    out[key] = (value, by_key[key])
            else:
                unknown.append(name)

    walk(loaded, "")
    if unknown:
        raise KeyError(sorted(unknown))
    return out


def _build(cls: type, values: dict[str, Any], key: str = "", base=None):
    """An instance of `cls` from leaf values (dotted keys), starting from `base` when given."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if _is_group(hints[f.name]):
            start = f.metadata["defaults"](values) if "defaults" in f.metadata else None
            if start is None and (f"{key}{f.name}" in values):
                start = values[f"{key}{f.name}"]
            inner = _unwrap(hints[f.name])[0]
            given = any(k.startswith(f"{key}{f.name}.") for k in values)
            if given or start is not None or base is None:
                kwargs[f.name] = _build(inner, values, f"{key}{f.name}.", start)
        elif f"{key}{f.name}" in values:
            kwargs[f.name] = values[f"{key}{f.name}"]
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def parse_dataclasses(
    classes: Sequence[type], argv: Sequence[str] | None = None, description: str | None = None, prog: str | None = None
) -> tuple:
    """Parse `argv` into one instance per dataclass; `--config FILE.yaml` supplies defaults."""
    import logging

    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="YAML file whose keys set defaults; flags override it (default: "
                                                    "none)")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)  # read by realness.cli.main
    taken = {"--config", "--verbose", "-h", "--help"}
    leaves = add_dataclass_arguments(parser, list(classes), taken=taken)
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
        try:
            found = _flatten_yaml(loaded, leaves, lambda text: logging.getLogger("realness").warning(
                "--config %s: %s", config, text))
        except KeyError as err:
            parser.error(f"{args['config']}: unknown key(s) {err.args[0]}")
        for key, (value, leaf) in found.items():
            try:
                values[key] = _coerce(value, leaf.hint)
            except ValueError as err:
                parser.error(f"--config {config}: key {leaf.flag}: {err}")
    values.update({k: v for k, v in args.items() if k not in ("config", "verbose")})
    for leaf in leaves:  # argparse gives lists; a tuple field gets a tuple, as from YAML
        if isinstance(values.get(leaf.key), list) and typing.get_origin(_unwrap(leaf.hint)[0]) is tuple:
            values[leaf.key] = tuple(values[leaf.key])
    missing = [leaf.flag for leaf in leaves if leaf.key not in values and _required(leaf.field) and "." not in leaf.key]
    if missing:
        parser.error(f"missing required option(s): {', '.join('--' + m for m in missing)}")
    out = []
    for cls in classes:  # a config's own checks (ValueError) reach the command's one-line error as they are
        out.append(_build(cls, values))
    return tuple(out)


def by_field_name(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """`options` with each key that is a field's flag (`out`) or old spelling (`output_dir`) renamed to the field
    (`output_dir`): what a YAML file written with flag names needs before `cls(**options)`."""
    names: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        for spelling in (f.metadata.get("flag", f.name), *f.metadata.get("aliases", ())):
            names.setdefault(spelling, f.name)
    return {names.get(k, k): v for k, v in options.items()}

