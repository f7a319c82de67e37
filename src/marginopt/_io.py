"""Reading input files: every way a file can be unreadable becomes a typed ``InputError`` naming it.

Shared by the portfolio, market, spec, model, covariance and batch-job loaders (and the batch
worker, which reads the same formats from bytes), so a binary file, a folder, an unreadable path,
deeply nested JSON or a YAML file with a key given twice fail the same way everywhere.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import InputError


def _path(path: Any, what: str, error: type[InputError]) -> Path:
    if path is None:
        raise error(f"no {what} given")
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise error(f"no {what} given (expected a file path, got {type(path).__name__})")
    return Path(path)


def read_bytes(path: Any, what: str, error: type[InputError] = InputError, *,
               field: str | None = None) -> bytes:
    """The file's bytes; a missing, unreadable or non-file path is ``error`` naming it."""
    p = _path(path, what, error)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} not found", source=str(p), field=field) from None
    except IsADirectoryError:
        raise error(f"{what} is a folder, not a file", source=str(p), field=field) from None
    except PermissionError:
        raise error(f"{what} cannot be read (permission denied)", source=str(p), field=field) from None
    except OSError as exc:
        raise error(f"{what} cannot be read ({exc.strerror or exc})", source=str(p),
                    field=field) from None


def decode(data: bytes | str, source: str, error: type[InputError] = InputError) -> str:
    """UTF-8 text (a byte-order mark is dropped); a binary file is ``error`` naming it."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"not a UTF-8 text file (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                    "is it the right file?", source=source) from None


def parse_json(data: bytes | str, source: str, error: type[InputError] = InputError) -> Any:
    text = decode(data, source, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"not valid JSON ({exc.msg} at line {exc.lineno})", source=source) from None
    except RecursionError:
        raise error("not usable JSON (nested too deeply)", source=source) from None
    except ValueError as exc:  # e.g. an integer literal too long to convert
        raise error(f"not usable JSON ({exc})", source=source) from None


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping that gives the same key twice."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        self.key = key
        super().__init__("while constructing a mapping", first,
                         f"found duplicate key {key!r}", again)


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping giving the same key twice (YAML's own rule;
    PyYAML would keep the last silently). Merge keys (``<<``) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise DuplicateKeyError(key, seen[key], key_node.start_mark)
                    seen[key] = key_node.start_mark
                except TypeError:  # unhashable: the base constructor says so
                    pass
        return super().construct_mapping(node, deep=deep)


def parse_yaml(data: bytes | str, source: str, error: type[InputError] = InputError) -> Any:
    text = decode(data, source, error)
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise error(f"key '{exc.key}' is given twice (line {line}); give each key once",
                    source=source, field=str(exc.key)) from None
    except yaml.YAMLError as exc:
        raise error(f"not valid YAML ({' '.join(str(exc).split())})", source=source) from None
    except RecursionError:
        raise error("not usable YAML (nested too deeply)", source=source) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a 5,000-digit integer, 2026-02-30
        raise error(f"not usable YAML ({' '.join(str(exc).split())[:120]})", source=source) from None


def read_json(path: Any, what: str, error: type[InputError] = InputError) -> Any:
    p = _path(path, what, error)
    return parse_json(read_bytes(p, what, error), str(p), error)


def read_yaml(path: Any, what: str, error: type[InputError] = InputError) -> Any:
    p = _path(path, what, error)
    return parse_yaml(read_bytes(p, what, error), str(p), error)


def describe(data: Any) -> str:
    """What a parsed value is, in words (for 'expected a mapping, got ...')."""
    if data is None:
        return "nothing (an empty file or null)"
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return "a text string"
    if isinstance(data, bool):
        return "true/false"
    if isinstance(data, (int, float)):
        return "a number"
    return f"a {type(data).__name__}"


def validation_message(exc: ValidationError, model: type[BaseModel] | None = None) -> tuple[str, str | None]:
    """The first error of a pydantic validation in plain words, and the dotted field it is at."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or None
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else "?"
        known: list[str] = []
        target: Any = model
        for part in err["loc"][:-1]:   # walk to the model the unknown key was given in
            info = getattr(target, "model_fields", {}).get(str(part)) if target else None
            target = getattr(info, "annotation", None) if info else None
        if target is not None and hasattr(target, "model_fields"):
            known = [k for k, f in target.model_fields.items() if not f.exclude]
        close = difflib.get_close_matches(key, known, n=1)
        msg = f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else
                                       f" (the keys are: {', '.join(known)})" if known else "")
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif "input" in err and kind not in ("missing",):
        got = repr(err["input"])
        msg = f"{msg} (got {got if len(got) <= 60 else got[:57] + '...'})"
    return msg, loc


def read_matrix(path: Path, what: str, error: type[InputError], *, field: str | None = None,
                header: bool = False) -> Any:
    """A numeric matrix file: ``.npy`` (no pickled objects) or CSV. Returns a float ndarray, or
    with ``header`` a pandas DataFrame of the CSV (its first row naming the columns). Any file
    that is not such a matrix is ``error`` naming it."""
    import io

    import numpy as np

    data = read_bytes(path, what, error, field=field)
    source = str(path)
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError, TypeError) as exc:
            raise error(f"not a numeric .npy array ({' '.join(str(exc).split())[:120]})",
                        source=source, field=field) from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise error("not a numeric .npy array", source=source, field=field)
        return arr.astype(float)
    text = decode(data, source, error)
    if header:
        import csv

        import pandas as pd
        try:
            return pd.read_csv(io.StringIO(text))
        except (ValueError, csv.Error) as exc:
            raise error(f"cannot read as CSV ({' '.join(str(exc).split())[:120]})", source=source,
                        field=field) from None
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # numpy warns on an empty file: refused below
            arr = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)
    except ValueError as exc:
        raise error(f"not a CSV of numbers ({' '.join(str(exc).split())[:120]})", source=source,
                    field=field) from None
    if arr.size == 0:
        raise error("the file holds no numbers", source=source, field=field)
    return arr
