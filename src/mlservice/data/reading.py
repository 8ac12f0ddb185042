"""How a CSV file is read: separator, decimal mark, encoding; detected when not given.

Spreadsheets in many locales export ``;``-separated files with ``,`` decimals in Windows-1252.
``resolve_csv_options`` fills what the caller did not set: the separator is sniffed from the first
64 KB (among ``, ; tab |``) and the encoding is UTF-8, or Windows-1252 when the bytes are not valid
UTF-8. The options used are recorded in the bundle, so ``predict`` and ``evaluate`` read new files
the same way. Imports only the standard library and pandas (serving uses it for batch scoring).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from mlservice.errors import DataError

__all__ = [
    "CANDIDATE_SEPARATORS",
    "CsvOptions",
    "check_one_column",
    "numeric_text_hint",
    "read_csv",
    "resolve_csv_options",
    "resolve_for_new_file",
    "sniff_separator",
]

CANDIDATE_SEPARATORS = (",", ";", "\t", "|")
_SAMPLE_BYTES = 64 * 1024
_SAMPLE_RECORDS = 50
_CHUNK = 1 << 20
_FALLBACK_ENCODINGS = ("cp1252", "latin-1")
_OPTION_KEYS = ("sep", "decimal", "thousands", "encoding", "quotechar", "na_values")

#: Who reads the error: the config (``data.read.sep``) or the command line (``--sep``).
Audience = Literal["config", "cli"]


@dataclass
class CsvOptions:
    """The reader options used for one file, and which of them were detected."""

    sep: str = ","
    decimal: str = "."
    thousands: str | None = None
    encoding: str = "utf-8"
    quotechar: str = '"'
    na_values: list[str] | None = None
    detected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``pandas.read_csv`` (and ``dask.dataframe.read_csv``)."""
        out: dict[str, Any] = {
            "sep": self.sep,
            "decimal": self.decimal,
            "encoding": self.encoding,
            "quotechar": self.quotechar,
        }
        if self.thousands is not None:
            out["thousands"] = self.thousands
        if self.na_values:
            out["na_values"] = list(self.na_values)
        return out

    def to_dict(self) -> dict[str, Any]:
        """What ``metadata.json`` records under ``data.read``."""
        return {key: getattr(self, key) for key in _OPTION_KEYS} | {"detected": self.detected}

    def describe(self) -> str:
        """``sep ';', decimal ',', encoding 'cp1252' (detected: sep, encoding)``."""
        parts = [f"sep {self.sep!r}", f"decimal {self.decimal!r}"]
        if self.thousands is not None:
            parts.append(f"thousands {self.thousands!r}")
        parts.append(f"encoding {self.encoding!r}")
        text = ", ".join(parts)
        return text + (f" (detected: {', '.join(self.detected)})" if self.detected else "")


# --------------------------------------------------------------------------- detection


def _valid(path: Path, encoding: str) -> bool:
    """Whether the whole file decodes with ``encoding`` (streamed, 1 MiB at a time)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _detect_encoding(path: Path) -> tuple[str, str | None]:
    """``utf-8`` when the bytes are valid UTF-8, else the first fallback that decodes them."""
    if _valid(path, "utf-8"):
        return "utf-8", None
    for encoding in _FALLBACK_ENCODINGS:
        if _valid(path, encoding):
            return encoding, (
                f"{path.name}: the bytes are not valid UTF-8; read as {encoding} "
                f"(Windows/Excel text). Set the encoding explicitly if that is wrong."
            )
    return "latin-1", None  # unreachable: latin-1 decodes any bytes


def _records(sample: str, sep: str, quotechar: str) -> list[int]:
    reader = csv.reader(io.StringIO(sample), delimiter=sep, quotechar=quotechar)
    counts = []
    try:
        for row in reader:
            if row:
                counts.append(len(row))
            if len(counts) >= _SAMPLE_RECORDS:
                break
    except csv.Error:
        return []
    return counts


def sniff_separator(
    sample: str, *, quotechar: str = '"', exclude: tuple[str, ...] = ()
) -> str | None:
    """The separator of a CSV text sample, or None when no candidate fits.

    ``csv.Sniffer`` proposes; a candidate is accepted when it splits every record of the sample
    (header included) into the same number (> 1) of fields. Among several, the Sniffer's choice
    wins, then the one giving the most fields.
    """
    candidates = [c for c in CANDIDATE_SEPARATORS if c not in exclude]
    if not candidates:
        return None
    try:
        proposed: str | None = csv.Sniffer().sniff(sample, delimiters="".join(candidates)).delimiter
    except csv.Error:
        proposed = None
    consistent: dict[str, int] = {}
    for sep in candidates:
        counts = _records(sample, sep, quotechar)
        if counts and counts[0] > 1 and len(set(counts)) == 1:
            consistent[sep] = counts[0]
    if proposed in consistent:
        return proposed
    if consistent:
        return max(consistent, key=lambda sep: consistent[sep])
    return None


def _sample(path: Path, encoding: str) -> str:
    with path.open("rb") as handle:
        raw = handle.read(_SAMPLE_BYTES + 1)
    truncated = len(raw) > _SAMPLE_BYTES
    text = raw[:_SAMPLE_BYTES].decode(encoding, errors="replace")
    if truncated and "\n" in text:
        text = text[: text.rindex("\n") + 1]  # drop the cut last record
    return text.removeprefix("\ufeff")


def resolve_csv_options(
    path: Path,
    given: Mapping[str, Any] | None = None,
    *,
    fallback: Mapping[str, Any] | None = None,
) -> CsvOptions:
    """The options to read ``path`` with: ``given`` ones as they are, the rest detected.

    ``fallback`` (the options of the training file) fills what detection cannot settle.
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = sorted(set(given) - set(_OPTION_KEYS))
    if unknown:
        raise DataError(f"unknown CSV reader option(s) {unknown}; known: {list(_OPTION_KEYS)}")
    fallback = fallback or {}
    options = CsvOptions(
        **{k: v for k, v in fallback.items() if k in _OPTION_KEYS and v is not None}
    )
    for key, value in given.items():
        setattr(options, key, list(value) if key == "na_values" else value)
    if "encoding" not in given:
        options.encoding, note = _detect_encoding(path)
        options.detected.append("encoding")
        if note:
            options.notes.append(note)
    _check_marks(options, path, sep_given="sep" in given)
    if "sep" not in given:
        exclude = tuple(c for c in (options.decimal, options.thousands, options.quotechar) if c)
        sniffed = sniff_separator(
            _sample(path, options.encoding), quotechar=options.quotechar, exclude=exclude
        )
        if sniffed is not None:
            options.sep = sniffed
            options.detected.append("sep")
            if sniffed != ",":
                options.notes.append(f"{path.name}: columns separated by {sniffed!r} (detected)")
        elif options.sep in exclude:
            options.sep = next(c for c in CANDIDATE_SEPARATORS if c not in exclude)
    return options


def _check_marks(options: CsvOptions, path: Path, *, sep_given: bool) -> None:
    """Separator, decimal mark, thousands separator and quote character must all differ."""
    roles = {"decimal": options.decimal, "thousands": options.thousands}
    roles["quotechar"] = options.quotechar
    if sep_given:
        roles = {"sep": options.sep, **roles}
    seen: dict[str, str] = {}
    for name, mark in roles.items():
        if mark is None:
            continue
        if mark in seen:
            raise DataError(
                f"reader options of {path.name!r}: {seen[mark]} and {name} are both {mark!r}; "
                "they must differ (data.read in the config, or --sep/--decimal/--thousands)"
            )
        seen[mark] = name


def resolve_for_new_file(
    path: Path, trained: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None
) -> CsvOptions:
    """Options for a file scored or evaluated by a bundle: read like the training file.

    Options the training config set are used as they are; options that were detected then are
    detected again for this file (falling back to the training values); ``overrides`` (command
    line) win over both.
    """
    trained = dict(trained or {})
    detected = set(trained.pop("detected", []) or [])
    given = {k: v for k, v in trained.items() if k not in detected and v is not None}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "decimal" in overrides and "thousands" not in overrides:
        # a new decimal mark makes the training thousands separator meaningless ('.' vs '.')
        given.pop("thousands", None)
        trained.pop("thousands", None)
    given.update(overrides)
    return resolve_csv_options(path, given, fallback=trained)


# --------------------------------------------------------------------------- reading


def _fix(audience: Audience, key: str, value: str) -> str:
    if audience == "cli":
        return f"pass --{key} {value!r}"
    return f"set data.read.{key}: {value!r} in the config"


def _header_separator(columns: list[str], used: str) -> str | None:
    """Another candidate separator inside the one column name of a misread file."""
    if len(columns) != 1:
        return None
    name = columns[0]
    counts = {c: name.count(c) for c in CANDIDATE_SEPARATORS if c != used}
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else None


def check_one_column(
    frame: pd.DataFrame, path: Path, options: CsvOptions, audience: Audience = "config"
) -> None:
    """Refuse a file read as one column whose name holds another separator, naming the fix."""
    columns = [str(c) for c in frame.columns]
    sep = _header_separator(columns, options.sep)
    if sep is None:
        return
    shown = columns[0] if len(columns[0]) <= 60 else columns[0][:57] + "…"
    raise DataError(
        f"{str(path)!r} was read as one column {shown!r} with separator {options.sep!r}, but "
        f"its header is separated by {sep!r}: {_fix(audience, 'sep', sep)}"
    )


def read_csv(
    path: Path, options: CsvOptions, *, audience: Audience = "config", **kwargs: Any
) -> pd.DataFrame:
    """``pandas.read_csv`` with ``options``; errors name the option that fixes them."""
    try:
        frame = pd.read_csv(path, **options.kwargs(), **kwargs)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot decode {str(path)!r} as {options.encoding!r} ({exc.reason}): give the "
            f"file's encoding, e.g. {_fix(audience, 'encoding', 'cp1252')}"
        ) from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        header = _first_line(path, options.encoding)
        sep = _header_separator([header], options.sep)
        hint = f"; {_fix(audience, 'sep', sep)}" if sep and options.sep not in header else ""
        raise DataError(f"cannot read dataset {str(path)!r}: {exc}{hint}") from exc
    check_one_column(frame, path, options, audience)
    return frame


def _first_line(path: Path, encoding: str) -> str:
    try:
        with path.open(encoding=encoding, errors="replace") as handle:
            return handle.readline().strip()
    except (OSError, LookupError):
        return ""


_COMMA_DECIMAL = re.compile(r"^[-+]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$")
_COMMA_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


def numeric_text_hint(
    series: pd.Series, options: Mapping[str, Any] | None, audience: Audience = "config"
) -> str | None:
    """How to read a text column that holds numbers (``1.234,5``), or None."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return None
    values = series.dropna().astype(str).str.strip().head(1000)
    values = values[values != ""]
    if values.empty:
        return None
    used = dict(options or {})
    if values.str.match(_COMMA_DECIMAL).mean() >= 0.9 and values.str.contains(r"[.,]").any():
        fixes = []
        if used.get("decimal", ".") != ",":
            fixes.append(_fix(audience, "decimal", ","))
        if values.str.contains(r"\d\.\d{3}").any() and used.get("thousands") != ".":
            fixes.append(_fix(audience, "thousands", "."))
        if fixes:
            return (
                f"column {series.name!r} holds numbers written like {values.iloc[0]!r} and was "
                f"read as text: {' and '.join(fixes)}"
            )
    if values.str.match(_COMMA_THOUSANDS).mean() >= 0.9 and used.get("thousands") != ",":
        return (
            f"column {series.name!r} holds numbers written like {values.iloc[0]!r} and was read "
            f"as text: {_fix(audience, 'thousands', ',')}"
        )
    return None
