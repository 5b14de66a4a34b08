"""Export a query's records to Parquet (columnar, for analysis tools) or JSONL (one record
per line, the same shape `data search -o jsonl` prints and `data collect --source local`
reads back). Parquet is written in row groups of 10,000 so memory stays flat."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from swarmpress.data.records import Record, content_json
from swarmpress.errors import ExportError  # one class for arena and data exports

ROW_GROUP = 10_000


def export(recs: Iterable[Record], out: str | Path, fmt: str | None = None) -> int:
    """Write records to `out` (format from --format or the suffix); returns the count."""
    out = Path(out)
    fmt = fmt or {".parquet": "parquet", ".jsonl": "jsonl"}.get(out.suffix)
    if fmt not in ("parquet", "jsonl"):
        raise ExportError(f"export format must be parquet or jsonl (from --format or the "
                          f"suffix of {out.name})")  # fmt: skip
    if out.exists():
        raise ExportError(f"{out} exists; export writes a new file")
    tmp = out.with_name(out.name + ".partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        n = _parquet(recs, tmp) if fmt == "parquet" else _jsonl(recs, tmp)
        tmp.replace(out)  # a finished file or none: never a truncated one under the name
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _jsonl(recs: Iterable[Record], path: Path) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for r in recs:
            fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def _parquet(recs: Iterable[Record], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("uri", pa.string()), ("datetime", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()), ("label", pa.string()), ("content", pa.string()),
        ("size", pa.int64()), ("scraped_at", pa.timestamp("us", tz="UTC")),
        ("bucket", pa.int64()),
    ])  # fmt: skip
    n = 0
    cols: dict[str, list] = {name: [] for name in schema.names}
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for r in recs:
            cols["uri"].append(r.uri)
            cols["datetime"].append(r.datetime)
            cols["source"].append(r.source)
            cols["label"].append(r.label)
            cols["content"].append(content_json(r.content))
            cols["size"].append(r.size)
            cols["scraped_at"].append(r.scraped_at)
            cols["bucket"].append(r.bucket)
            n += 1
            if len(cols["uri"]) >= ROW_GROUP:
                w.write_table(pa.table(cols, schema=schema))
                cols = {name: [] for name in schema.names}
        if cols["uri"] or n == 0:
            w.write_table(pa.table(cols, schema=schema))
    return n
