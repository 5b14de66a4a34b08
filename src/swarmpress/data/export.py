"""Export a query's records to Parquet (columnar, for analysis tools) or JSONL (one record
per line, the same shape `data search -o jsonl` prints and `data collect --source local`
reads back). Parquet is written in row groups of 10,000 so memory stays flat."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from swarmpress.data.records import Record, content_json
from swarmpress.errors import ExportError  # one class for arena and data exports

ROW_GROUP = 10_000


def export(recs: Iterable[Record], out: str | Path, fmt: str | None = None) -> int:
    """Write records to `out` (format from --format or the suffix); returns the count.

    `out` must not exist (not even as a link). The records go to a new temporary file
    beside it (a unique name, made with O_EXCL, so no file of the user's is touched and no
    link is followed), which takes the name `out` only once complete: a finished file or
    none, never a truncated one, and never one that appeared at `out` meanwhile."""
    out = Path(out)
    fmt = fmt or {".parquet": "parquet", ".jsonl": "jsonl"}.get(out.suffix)
    if fmt not in ("parquet", "jsonl"):
        raise ExportError(f"export format must be parquet or jsonl (from --format or the "
                          f"suffix of {out.name})")  # fmt: skip
    if os.path.lexists(out):
        raise ExportError(f"{out} exists; export writes a new file")
    tmp: str | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
        with os.fdopen(fd, "wb") as fh:
            n = _parquet(recs, fh) if fmt == "parquet" else _jsonl(recs, fh)
            fh.flush()
            os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fh.fileno(), 0o666 & ~umask)  # what a plain open() would have made
        _link_new(tmp, out)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return n


def _link_new(tmp: str, out: Path) -> None:
    """Give tmp the name out only if nothing is there (a hard link fails then)."""
    try:
        os.link(tmp, out, follow_symlinks=False)
    except FileExistsError:
        raise ExportError(f"{out} exists; export writes a new file") from None
    except OSError as exc:  # a file system without hard links
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(out):
            raise ExportError(f"{out} exists; export writes a new file") from None
        os.replace(tmp, out)


def _jsonl(recs: Iterable[Record], fh: BinaryIO) -> int:
    n = 0
    for r in recs:
        fh.write((json.dumps(r.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        n += 1
    return n


def _parquet(recs: Iterable[Record], fh: BinaryIO) -> int:
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
    with pq.ParquetWriter(fh, schema, compression="zstd") as w:
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
