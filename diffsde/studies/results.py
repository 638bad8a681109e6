"""Study results: one plain-data class for every study, printed as tables and saved as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from .._io import write_text_atomic
from .._table import format_table

__all__ = ["StudyResult", "RESULT_FORMAT", "RESULT_VERSION"]

PathLike = Union[str, os.PathLike]

RESULT_FORMAT = "diffsde.StudyResult"
RESULT_VERSION = 1
_INT_TEXT = re.compile(r"[+-]?\d+")


@dataclass
class StudyResult:
    """The result of a study: plain data that prints as a table and saves to JSON or CSV.

    Attributes:
        kind: which study made it ("convergence", "comparison", "error_budget"; "" when
            loaded from CSV, which holds the rows only).
        rows: the main table, one dict of scalars (str, int, float, bool or None) per row.
        summary: a second, smaller table (e.g. fitted orders per method); may be empty.
        meta: the settings and global figures (grid, t_min, Monte Carlo floor, ...).
    """

    kind: str
    rows: list[dict]
    summary: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def table(self, columns: Sequence[str] | None = None) -> str:
        """The rows as a Markdown table (:func:`diffsde._table.format_table`)."""
        return format_table(self.rows, columns)

    def summary_table(self, columns: Sequence[str] | None = None) -> str:
        """The summary rows as a Markdown table."""
        return format_table(self.summary, columns)

    def to_dict(self) -> dict:
        """Everything as a JSON-ready dict, tagged with :data:`RESULT_FORMAT` and :data:`RESULT_VERSION`."""
        return {"format": RESULT_FORMAT, "version": RESULT_VERSION, "kind": self.kind,
                "rows": self.rows, "summary": self.summary, "meta": self.meta}

    @classmethod
    def from_dict(cls, payload: Any, where: str = "payload") -> "StudyResult":
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: not a StudyResult of this version, or malformed rows, summary or meta
                (the message names ``where``).
        """
        if not isinstance(payload, dict) or payload.get("format") != RESULT_FORMAT:
            raise ValueError(f"{where} is not a {RESULT_FORMAT} (no matching 'format' field)")
        if payload.get("version") != RESULT_VERSION:
            raise ValueError(f"{where} has version {payload.get('version')!r}; this diffsde reads "
                             f"version {RESULT_VERSION}")
        rows, summary, meta = payload.get("rows"), payload.get("summary", []), payload.get("meta", {})
        if not (isinstance(rows, list) and all(isinstance(row, dict) for row in rows)
                and isinstance(summary, list) and isinstance(meta, dict)):
            raise ValueError(f"{where}: 'rows' and 'summary' must be lists of objects, 'meta' an object")
        return cls(str(payload.get("kind", "")), rows, summary, meta)

    def to_json(self, path: PathLike) -> None:
        """Write everything (kind, rows, summary, meta) as JSON, atomically (temp file + rename).
        NaN is written as the token ``NaN`` (Python's json reads it back)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def to_csv(self, path: PathLike) -> None:
        """Write the rows as CSV, atomically. Columns are the union of the rows' keys in order
        of first appearance; None is written as an empty cell, floats in full precision."""
        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in self.rows:
            writer.writerow(["" if row.get(key) is None else repr(row[key]) if isinstance(row[key], float)
                             else row[key] for key in columns])
        write_text_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: PathLike) -> "StudyResult":
        """Read a result written by :meth:`to_json` (everything) or :meth:`to_csv` (rows only).

        CSV cells are read back as None (empty), bool ("True"/"False"), int, float (including
        "nan" and "inf") or str, in that order of preference, so a text column whose values
        look like numbers comes back as numbers.

        Raises:
            ValueError: unknown suffix (not .json or .csv) or a malformed file.
            OSError: the file cannot be read.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from err
            return cls.from_dict(payload, str(path))
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    raise ValueError(f"{path} is empty: expected a CSV header line")
                rows = []
                for number, cells in enumerate(reader, start=2):
                    if len(cells) != len(header):
                        raise ValueError(f"{path}, line {number}: {len(cells)} cells for {len(header)} columns")
                    rows.append({key: _parse_cell(cell) for key, cell in zip(header, cells)})
            return cls("", rows)
        raise ValueError(f"cannot tell the format of {path}: the suffix must be .json or .csv, got {suffix!r}")


def _parse_cell(cell: str):
    """A CSV cell back as None, bool, int, float or str (:meth:`StudyResult.load`)."""
    if cell == "":
        return None
    if cell in ("True", "False"):
        return cell == "True"
    if _INT_TEXT.fullmatch(cell):
        return int(cell)
    try:
        return float(cell)
    except ValueError:
        return cell
