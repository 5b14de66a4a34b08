"""`swarmpress data ...`: collect records into the store, search them (for people: a table;
for agents: json, jsonl, csv with a cursor), print the JSON Schema of every output, and pack
a query's records into training shards for `swarmpress swarm train --text DIR`."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from swarmpress.cli.common import EXIT_USAGE, console, err_console, fail, guard
from swarmpress.cli.options import JsonOpt, grouped, opt, split
from swarmpress.cli.output import emit, progress, table

data_app = typer.Typer(
    help="Collect, store, query and pack the text that feeds training.",
    no_args_is_help=True,
)

StoreOpt = opt(str | None, "--store", "SQLite file or postgresql:// URL (default: env "
               "SWARMPRESS_DATA_STORE, else ~/.swarmpress/data.db).")  # fmt: skip
KeywordOpt = opt(list[str] | None, "-k --keywords",
                 "Full-text keyword or phrase (repeatable; commas split too).")  # fmt: skip
UserOpt = opt(list[str] | None, "-u --users", "Author (repeatable; commas split).")
LabelOpt = opt(str | None, "--label", "Label, e.g. r/python or #ai (case-insensitive).")
FromOpt = opt(str | None, "--from", "Oldest time: ISO 8601, Unix seconds, or 24h, 7d.")
ToOpt = opt(str | None, "--to", "Newest time, same forms as --from.")
SourceFilterOpt = opt(str, "--source", "Records of this source only (or all).")
ModeOpt = opt(str, "--mode", "any: a record matches one keyword; all: every keyword.")

# The filters of a query (search, export, pack): one group, as `grouped` hands it over;
# export and pack also take the source as an option (search: as its argument).
QUERY_FLAGS = {
    "keywords": (KeywordOpt, None),
    "users": (UserOpt, None),
    "label": (LabelOpt, None),
    "since": (FromOpt, None),
    "until": (ToOpt, None),
    "mode": (ModeOpt, "any"),
}


SELECT_FLAGS = {"source": (SourceFilterOpt, "all"), **QUERY_FLAGS}


def _query(source: str | None, filters: dict[str, Any], limit: int = 1, cursor=None):
    from swarmpress.data.query import Query, parse_when

    q = Query(
        source=None if source in (None, "all") else source,
        keywords=split(filters.get("keywords")), users=split(filters.get("users")),
        label=filters.get("label"), since=parse_when(filters.get("since"), "--from"),
        until=parse_when(filters.get("until"), "--to"), limit=limit,
        mode=filters.get("mode", "any"), cursor=cursor,
    )  # fmt: skip
    q.check()
    return q


def _selected(selection: dict[str, Any], store: str | None):
    """The records a selection (source and filters) picks in the store, newest first."""
    from swarmpress.data.query import iter_query

    query = _query(selection.get("source"), selection)
    st = _store(store, create=False)
    query.source = _source(selection.get("source"), st)
    return iter_query(st, query)


def _store(location: str | None, max_bytes: int | None = None, create: bool = True):
    """The store; one that does not open is bad input (exit 2, where later failures are 1).
    `create=False` (commands that only read): a SQLite file that is not there is refused."""
    from swarmpress.data.store import Store

    with guard(code=EXIT_USAGE):
        return Store(location, max_bytes=max_bytes, create=create)


def _source(name: str | None, st) -> str | None:
    """The source a query selects: `all` (None), a known source or one the store holds;
    else exit 2 listing them, as `collect` refuses an unknown source."""
    from swarmpress.data.sources.registry import query_source

    return query_source(name, st.has_source, st.sources)


def _batch(s: dict) -> str:
    return (f"read {s['read']}, new {s['inserted']}, duplicates {s['duplicates']}, "
            f"skipped {s['skipped']}")  # fmt: skip


CollectSourceOpt = opt(str, "--source", "Where from: local, reddit (public listings) or x "
                       "(needs env X_BEARER_TOKEN); a job may name several: reddit,x.")  # fmt: skip
CollectLabelOpt = opt(str | None, "--label", "reddit: r/NAME[,r/OTHER] subreddits; x: a #hashtag.")
PathOpt = opt(str | None, "--path", "local: a .txt/.md/.jsonl file or a folder of them "
              "(default: the embedded pydoc_data.topics text).")  # fmt: skip
LimitOpt = opt(int | None, "--limit", "Stop after N items.", min=1)
MaxBytesOpt = opt(int | None, "--max-bytes", "Size cap of the store's content; the oldest "
                  "records are evicted beyond it.")  # fmt: skip
# A collection as a named job: when it runs again and when it stops, as one group.
JOB_FLAGS = {
    "job": (opt(str | None, "--job", "Run as a named job (defined by these options the first "
                "time; resumed from its saved state after that)."), None),
    "every": (opt(float, "--every", "Job: seconds between rounds (0: one round)."), 0.0),
    "stop_after_records": (opt(int | None, "--stop-after-records", "Job: stop after N new "
                               "records."), None),
    "stop_after_hours": (opt(float | None, "--stop-after-hours", "Job: stop T hours after its "
                             "first start."), None),
    "background": (opt(bool, "--background", "Job: run detached; progress in its log and in "
                       "`data jobs`."), False),
}  # fmt: skip


@data_app.command("collect")
@grouped("job", JOB_FLAGS)
def collect_cmd(
    source: CollectSourceOpt = "local",
    keywords: KeywordOpt = None,
    users: UserOpt = None,
    label: CollectLabelOpt = None,
    mode: ModeOpt = "any",
    path: PathOpt = None,
    store: StoreOpt = None,
    limit: LimitOpt = None,
    max_bytes: MaxBytesOpt = None,
    job: dict | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Collect records from a source into the store (dedup by uri; bad items skipped)."""
    from swarmpress.data.collect import collect
    from swarmpress.data.sources.registry import check_sources, open_source

    sources = check_sources([source])
    st = _store(store, max_bytes)
    job = job or {}
    if "job" in job or job.get("background"):
        if "job" not in job:
            raise fail("--background needs --job NAME")
        spec = dict(name=job["job"], sources=sources, path=path, keywords=split(keywords),
                    users=split(users), label=label, mode=mode, every_s=job["every"],
                    stop_after_records=job.get("stop_after_records"),
                    stop_after_hours=job.get("stop_after_hours"),
                    page_limit=limit or 1000, max_bytes=max_bytes)  # fmt: skip
        _run_job(st, spec, job["background"], as_json)
        return
    if len(sources) > 1:
        raise fail("several sources are collected by a job: add --job NAME")
    with progress("collecting") as steps:
        items, _ = open_source(source, path=path, keywords=split(keywords), users=split(users),
                               label=label, mode=mode, limit=limit)  # fmt: skip
        stats = collect(st, items, source, limit=limit, progress=lambda s: steps.update(_batch(s)))
    keys = ("read", "inserted", "duplicates", "skipped", "evicted", "records_in_store", "seconds")
    columns = ("read", "inserted", "duplicates", "skipped", "evicted", "in store", "seconds")
    emit(stats, as_json, lambda: table(columns, [[stats[k] for k in keys]], right=columns,
                                       title=f"collect {source} -> {stats['store']}"))  # fmt: skip
    if not as_json:
        for e in stats["errors"][:5]:
            err_console.print(f"[yellow]skipped:[/] {escape(e)}", highlight=False)
        if stats["skipped"] > 5:
            err_console.print(f"[yellow]skipped:[/] {stats['skipped'] - 5} more (--json lists "
                              f"the first {len(stats['errors'])})", highlight=False)  # fmt: skip


def _run_job(st, raw: dict, background: bool, as_json: bool) -> None:
    """Define the job the first time, then run it here or detached (swarmpress.data.jobs)."""
    from swarmpress.data.jobs import get_job, parse_spec, run_job, save_spec, start_detached

    name = raw["name"]
    if get_job(st, name) is None:
        save_spec(st, parse_spec(raw))
    if background:
        out = start_detached(st, name)
        emit(out, as_json, lambda: f"job {name} started (pid {out['pid']}), log {out['log']}",
             indent=None)  # fmt: skip
        return
    with progress(f"job {name}") as steps:
        result = run_job(st, name, progress=lambda s: steps.update(
            f"job {name}: {s['collected']} collected, {s['duplicates']} duplicates, "
            f"{s['skipped']} skipped"))  # fmt: skip
    emit(result, as_json, lambda: f"job {name}: {result['status']}, {result['collected']} "
         f"collected in {result['rounds']} round(s)", indent=None)  # fmt: skip


@data_app.command("jobs")
def jobs_cmd(
    stop: Annotated[str | None, typer.Option("--stop", help="Stop this running job.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The collection jobs in a store: status, records collected, rounds, cursor."""
    from swarmpress.data.jobs import list_jobs, stop_job

    st = _store(store, create=False)
    if stop is not None:
        ok = stop_job(st, stop)
        console.print(f"job {stop}: {'stop requested' if ok else 'not running'}")
        return
    rows = list_jobs(st)
    cells = [(j["name"], ",".join(j["spec"]["sources"]), j["status"], j["collected"],
              j["rounds"], j["pid"] or "", j["error"] or "") for j in rows]  # fmt: skip
    emit(rows, as_json, lambda: table(("name", "sources", "status", "collected", "rounds", "pid",
                                       "error"), cells, title=f"jobs in {st.display}"))  # fmt: skip


def _print_page(result: dict, output: str) -> None:
    """A page of search results as a table, JSON, JSON lines or CSV."""
    rows = result["results"]
    if output in ("json", "table"):
        emit(result, output == "json", lambda: _records_table(result), ensure_ascii=False)
    elif output == "jsonl":
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
    else:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["uri", "datetime", "source", "label", "author", "title", "text", "size"])
        for r in rows:
            c = r["content"]
            fields = (c.get("author", ""), c.get("title", ""), c.get("text", ""))
            w.writerow([r["uri"], r["datetime"], r["source"], r["label"] or "", *fields, r["size"]])
        sys.stdout.write(buf.getvalue())
    if result["next_cursor"] and output != "json":
        shown = console if output == "table" else err_console
        shown.print(f"next page: --cursor {result['next_cursor']}")


def _records_table(result: dict):
    def cells(r: dict) -> tuple:
        c = r["content"]
        text = (c.get("title") or c.get("text") or "").replace("\n", " ")
        return r["datetime"][:19], r["source"], r["label"] or "", c.get("author", ""), text[:100]

    t = table(("time", "source", "label", "author", "text"), map(cells, result["results"]),
              title=f"{result['count']} records")  # fmt: skip
    for col in t.columns:
        col.overflow = "fold"
    return t


@data_app.command("search")
@grouped("filters", QUERY_FLAGS)
def search_cmd(
    source: Annotated[str, typer.Argument(help="reddit, x, local (any stored source) or all.")],
    filters: dict,
    limit: Annotated[int, typer.Option("-l", "--limit", help="Records per page.")] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Continue after the page that printed it.")
    ] = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="table, json, jsonl or csv.")
    ] = "table",
    store: StoreOpt = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live", help="Fetch from the source first (reddit, x, local), then search the store."
        ),
    ] = False,
) -> None:
    """Search the store, newest first, a page at a time (`data schema search`: the JSON)."""
    from swarmpress.data.collect import collect
    from swarmpress.data.query import search
    from swarmpress.data.sources.registry import SOURCES, check_sources, open_source

    if output not in ("table", "json", "jsonl", "csv"):
        raise fail(f"-o must be table, json, jsonl or csv, not {output!r}")
    if live and source not in SOURCES:
        check_sources([source])  # an unknown name: refused as collect refuses it
        raise fail(f"--live needs a source to fetch from: {', '.join(SOURCES)}")
    q = _query(source, filters, limit, cursor)
    st = _store(store, create=live)  # --live collects first: that may make the store
    q.source = _source(source, st)
    if live:
        with err_console.status(f"fetching from {source}"):
            items, _ = open_source(source, keywords=q.keywords, users=q.users, label=q.label,
                                   mode=q.mode, limit=max(limit, 100))  # fmt: skip
            stats = collect(st, items, source, limit=max(limit, 100))
        err_console.print(f"fetched {stats['read']}: {stats['inserted']} new, "
                          f"{stats['skipped']} skipped")  # fmt: skip
    _print_page(search(st, q), output)


@data_app.command("export")
@grouped("selection", SELECT_FLAGS)
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="New file: .parquet or .jsonl.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="parquet or jsonl (default: from --out).")
    ] = None,
    selection: dict | None = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a query's records (default: all) to Parquet or JSONL, newest first."""
    from swarmpress.data.export import export

    records = _selected(selection or {}, store)
    with err_console.status(f"exporting to {out}"):
        n = export(records, out, fmt)
    emit({"out": str(out), "records": n}, as_json, lambda: f"{n} records -> {out}", indent=None)


@data_app.command("schema")
def schema_cmd(
    name: Annotated[
        str, typer.Argument(help="search, collect, record, pack, job or jobs.")
    ] = "search",
) -> None:
    """Print the JSON Schema (draft 2020-12) of a data command's output."""
    from swarmpress.data.schema import schema

    try:
        doc = schema(name)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    print(json.dumps(doc, indent=2))


@data_app.command("pack")
@grouped("selection", SELECT_FLAGS)
def pack_cmd(
    out: Annotated[Path, typer.Option("--out", help="Empty or new folder for the shards.")],
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="minilm, a model folder or a tokenizer.json.")
    ] = "minilm",
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per row.")] = 800,
    seed: Annotated[int, typer.Option("--seed", help="Shuffle seed.")] = 0,
    selection: dict | None = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tokenize a query's records into shuffled fixed-length shards plus manifest.json."""
    from swarmpress.data.pack import pack

    records = _selected(selection or {}, store)
    with progress("packing") as steps:
        manifest = pack(records, out, tokenizer, seq_len, seed,
                        progress=lambda n: steps.update(f"{n} records"))  # fmt: skip
    emit(manifest, as_json, lambda: (
        f"{manifest['records']} records -> {manifest['rows']} rows of {seq_len} tokens in "
        f"{len(manifest['shards'])} shard(s) at {out} (train with: swarmpress swarm train "
        f"--text {out})"))  # fmt: skip
