"""`swarmpress data ...`: collect records into the store, search them (for people: a table;
for agents: json, jsonl, csv with a cursor), print the JSON Schema of every output, and pack
a query's records into training shards for `swarmpress swarm train --text DIR`."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from swarmpress.cli_common import JsonOpt, console, err_console, fail

data_app = typer.Typer(
    help="Collect, store, query and pack the text that feeds training.",
    no_args_is_help=True,
)

SOURCES = ("local", "reddit", "x")
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="SQLite file or postgresql:// URL (default: env "
                 "SWARMPRESS_DATA_STORE, else ~/.swarmpress/data.db)."),
]  # fmt: skip
KeywordOpt = Annotated[
    list[str] | None,
    typer.Option("-k", "--keywords", help="Full-text keyword or phrase (repeatable; commas "
                 "split too)."),
]  # fmt: skip
UserOpt = Annotated[
    list[str] | None, typer.Option("-u", "--users", help="Author (repeatable; commas split).")
]
LabelOpt = Annotated[
    str | None, typer.Option("--label", help="Label, e.g. r/python or #ai (case-insensitive).")
]
FromOpt = Annotated[
    str | None, typer.Option("--from", help="Oldest time: ISO 8601, Unix seconds, or 24h, 7d.")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="Newest time, same forms as --from.")]
SourceFilterOpt = Annotated[
    str, typer.Option("--source", help="Records of this source only (or all).")
]
ModeOpt = Annotated[
    str, typer.Option("--mode", help="any: a record matches one keyword; all: every keyword.")
]


def _spinner() -> Progress:
    """A transient spinner line on stderr (stdout stays clean for --json)."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err_console, transient=True)  # fmt: skip


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


@contextmanager
def _guard():
    from swarmpress.data.pack import PackError
    from swarmpress.data.query import QueryError
    from swarmpress.data.records import RecordError
    from swarmpress.data.sources.http import AuthError, FetchError
    from swarmpress.data.sources.local import SourceError
    from swarmpress.data.store import StoreError

    try:
        yield
    except (QueryError, SourceError, PackError, RecordError, AuthError) as exc:
        raise fail(str(exc)) from None
    except FetchError as exc:
        raise fail(str(exc), 1) from None
    except StoreError as exc:
        raise fail(str(exc), 1) from None


def _store(location: str | None, max_bytes: int | None = None):
    """The store, or exit 2: a store that does not open is bad input."""
    from swarmpress.data.store import Store, StoreError

    try:
        return Store(location, max_bytes=max_bytes)
    except StoreError as exc:
        raise fail(str(exc)) from None


def _query(source, keywords, users, label, since, until, limit, mode, cursor):
    from swarmpress.data.query import Query, parse_when

    with _guard():
        q = Query(
            source=None if source in (None, "all") else source,
            keywords=_split(keywords), users=_split(users), label=label,
            since=parse_when(since, "--from"), until=parse_when(until, "--to"),
            limit=limit, mode=mode, cursor=cursor,
        )  # fmt: skip
        q.check()
    return q


def source_items(source: str, path, keywords, users, label, mode, limit, cursor=None):
    """(items, a function giving the source's resume cursor) for a collection; network
    sources page until `limit`, from `cursor` when one is given."""
    from swarmpress.data.sources.local import read_local

    if source == "local":
        return read_local(path), lambda: None
    if source == "reddit":
        from swarmpress.data.sources.reddit import RedditSource

        subs = [x for x in _split([label] if label else []) if x.lower().startswith("r/")]
        src = RedditSource()
        return src.items(subs, _split(keywords), mode, limit or 1000, cursor), lambda: src.resume
    from swarmpress.data.sources.x import XSource

    src = XSource()
    items = src.items(_split(keywords), _split(users), label, mode, limit or 1000, cursor)
    return items, lambda: src.resume


def _job_items(spec, source, cursor):
    return source_items(source, spec.path, spec.keywords, spec.users, spec.label,
                        spec.mode, spec.page_limit, cursor)  # fmt: skip


@data_app.command("collect")
def collect_cmd(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="Where from: local, reddit (public listings) or x (needs env "
            "X_BEARER_TOKEN); a job may name several: reddit,x.",
        ),
    ] = "local",
    keywords: KeywordOpt = None,
    users: UserOpt = None,
    label: Annotated[
        str | None,
        typer.Option("--label", help="reddit: r/NAME[,r/OTHER] subreddits; x: a #hashtag."),
    ] = None,
    mode: ModeOpt = "any",
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            help="local: a .txt/.md/.jsonl file or a folder of "
            "them (default: the embedded pydoc_data.topics text).",
        ),
    ] = None,
    store: StoreOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Stop after N items.")] = None,
    max_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-bytes",
            help="Size cap of the store's content; the oldest records are evicted beyond it.",
        ),
    ] = None,
    job: Annotated[
        str | None,
        typer.Option(
            "--job",
            help="Run as a named job (defined by these options "
            "the first time; resumed from its saved state after that).",
        ),
    ] = None,
    every: Annotated[
        float, typer.Option("--every", help="Job: seconds between rounds (0: one round).")
    ] = 0.0,
    stop_after_records: Annotated[
        int | None, typer.Option("--stop-after-records", help="Job: stop after N new records.")
    ] = None,
    stop_after_hours: Annotated[
        float | None,
        typer.Option("--stop-after-hours", help="Job: stop T hours after its first start."),
    ] = None,
    background: Annotated[
        bool,
        typer.Option(
            "--background", help="Job: run detached; progress in its log and in `data jobs`."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Collect records from a source into the store (dedup by uri; bad items skipped)."""
    from swarmpress.data.collect import collect

    sources = _split([source])
    unknown = [x for x in sources if x not in SOURCES]
    if unknown or not sources:
        bad = ", ".join(unknown) or repr(source)
        raise fail(f"unknown source {bad}; known: {', '.join(SOURCES)}")
    st = _store(store, max_bytes)
    if job is not None or background:
        if job is None:
            raise fail("--background needs --job NAME")
        spec = dict(name=job, sources=sources, path=path, keywords=_split(keywords),
                    users=_split(users), label=label, mode=mode, every_s=every,
                    stop_after_records=stop_after_records, stop_after_hours=stop_after_hours,
                    page_limit=limit or 1000, max_bytes=max_bytes)  # fmt: skip
        _run_job(st, spec, background, as_json)
        return
    if len(sources) > 1:
        raise fail("several sources are collected by a job: add --job NAME")
    bar = _spinner()
    with _guard(), bar:
        task = bar.add_task("collecting")
        items, _ = source_items(source, path, keywords, users, label, mode, limit)

        def show(s: dict) -> None:
            bar.update(task, description=f"read {s['read']}, new {s['inserted']}, "
                       f"duplicates {s['duplicates']}, skipped {s['skipped']}")  # fmt: skip

        stats = collect(st, items, source, limit=limit, progress=show)
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    t = Table(title=f"collect {source} -> {stats['store']}")
    for col in ("read", "inserted", "duplicates", "skipped", "evicted", "in store", "seconds"):
        t.add_column(col, justify="right")
    t.add_row(*(str(stats[k]) for k in ("read", "inserted", "duplicates", "skipped", "evicted",
                                         "records_in_store", "seconds")))  # fmt: skip
    console.print(t)
    for e in stats["errors"][:5]:
        err_console.print(f"[yellow]skipped:[/] {e}", highlight=False)


def _run_job(st, raw: dict, background: bool, as_json: bool) -> None:
    import os
    import subprocess

    from swarmpress.data.jobs import JobError, get_job, parse_spec, run_job, save_spec

    name = raw["name"]
    try:
        if get_job(st, name) is None:
            save_spec(st, parse_spec(raw))
        if background:
            logdir = Path("~/.swarmpress/jobs").expanduser()
            logdir.mkdir(parents=True, exist_ok=True)
            log = logdir / f"{name}.log"
            # the store travels in the environment, so a password never shows in `ps`
            cmd = [sys.executable, "-m", "swarmpress.cli", "data", "collect", "--job", name]
            env = dict(os.environ, SWARMPRESS_DATA_STORE=st.url)
            with open(log, "ab") as fh:
                p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env=env)  # fmt: skip
            out = {"job": name, "pid": p.pid, "log": str(log)}
            print(json.dumps(out) if as_json else f"job {name} started (pid {p.pid}), log {log}")
            return
        bar = _spinner()
        with _guard(), bar:
            task = bar.add_task(f"job {name}")

            def show(s: dict) -> None:
                bar.update(task, description=f"job {name}: {s['collected']} collected, "
                           f"{s['duplicates']} duplicates, {s['skipped']} skipped")  # fmt: skip
                if not err_console.is_terminal:  # a log (a background job): a line a batch
                    line = {k: s[k] for k in ("collected", "read", "duplicates", "skipped")}
                    print(json.dumps({"job": name, "time": time.time(), **line}),
                          file=sys.stderr, flush=True)  # fmt: skip

            result = run_job(st, name, _job_items, progress=show)
    except JobError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"job {name}: {result['status']}, {result['collected']} collected in "
                      f"{result['rounds']} round(s)")  # fmt: skip


@data_app.command("jobs")
def jobs_cmd(
    stop: Annotated[str | None, typer.Option("--stop", help="Stop this running job.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The collection jobs in a store: status, records collected, rounds, cursor."""
    from swarmpress.data.jobs import JobError, list_jobs, stop_job

    st = _store(store)
    if stop is not None:
        try:
            ok = stop_job(st, stop)
        except JobError as exc:
            raise fail(str(exc)) from None
        console.print(f"job {stop}: {'stop requested' if ok else 'not running'}")
        return
    rows = list_jobs(st)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"jobs in {st.display}")
    for col in ("name", "sources", "status", "collected", "rounds", "pid", "error"):
        t.add_column(col)
    for j in rows:
        t.add_row(j["name"], ",".join(j["spec"]["sources"]), j["status"], str(j["collected"]),
                  str(j["rounds"]), str(j["pid"] or ""), j["error"] or "")  # fmt: skip
    console.print(t)


def _emit(result: dict, output: str) -> None:
    rows = result["results"]
    if output == "json":
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif output == "jsonl":
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        if result["next_cursor"]:
            err_console.print(f"next page: --cursor {result['next_cursor']}")
    elif output == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["uri", "datetime", "source", "label", "author", "title", "text", "size"])
        for r in rows:
            c = r["content"]
            fields = (c.get("author", ""), c.get("title", ""), c.get("text", ""))
            w.writerow([r["uri"], r["datetime"], r["source"], r["label"] or "", *fields, r["size"]])
        sys.stdout.write(buf.getvalue())
        if result["next_cursor"]:
            err_console.print(f"next page: --cursor {result['next_cursor']}")
    else:
        t = Table(title=f"{result['count']} records")
        for col in ("time", "source", "label", "author", "text"):
            t.add_column(col, overflow="fold")
        for r in rows:
            c = r["content"]
            text = (c.get("title") or c.get("text") or "").replace("\n", " ")
            t.add_row(r["datetime"][:19], r["source"], r["label"] or "", c.get("author", ""),
                      text[:100])  # fmt: skip
        console.print(t)
        if result["next_cursor"]:
            console.print(f"next page: --cursor {result['next_cursor']}")


@data_app.command("search")
def search_cmd(
    source: Annotated[str, typer.Argument(help="reddit, x, local (any stored source) or all.")],
    keywords: KeywordOpt = None,
    users: UserOpt = None,
    label: LabelOpt = None,
    since: FromOpt = None,
    until: ToOpt = None,
    limit: Annotated[int, typer.Option("-l", "--limit", help="Records per page.")] = 50,
    mode: ModeOpt = "any",
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

    if output not in ("table", "json", "jsonl", "csv"):
        raise fail(f"-o must be table, json, jsonl or csv, not {output!r}")
    q = _query(source, keywords, users, label, since, until, limit, mode, cursor)
    st = _store(store)
    if live:
        if source not in SOURCES:
            raise fail(f"--live needs a source to fetch from: {', '.join(SOURCES)}")
        with _guard(), err_console.status(f"fetching from {source}"):
            items, _ = source_items(source, None, keywords, users, label, mode, max(limit, 100))
            stats = collect(st, items, source, limit=max(limit, 100))
        err_console.print(f"fetched {stats['read']}: {stats['inserted']} new, "
                          f"{stats['skipped']} skipped")  # fmt: skip
    with _guard():
        result = search(st, q)
    _emit(result, output)


@data_app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="New file: .parquet or .jsonl.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="parquet or jsonl (default: from --out).")
    ] = None,
    source: SourceFilterOpt = "all",
    keywords: KeywordOpt = None,
    users: UserOpt = None,
    label: LabelOpt = None,
    since: FromOpt = None,
    until: ToOpt = None,
    mode: ModeOpt = "any",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a query's records (default: all) to Parquet or JSONL, newest first."""
    from swarmpress.data.export import ExportError, export
    from swarmpress.data.query import iter_query

    q = _query(source, keywords, users, label, since, until, 1, mode, None)
    st = _store(store)
    with _guard(), err_console.status(f"exporting to {out}"):
        try:
            n = export(iter_query(st, q), out, fmt)
        except ExportError as exc:
            raise fail(str(exc)) from None
    if as_json:
        print(json.dumps({"out": str(out), "records": n}))
    else:
        console.print(f"{n} records -> {out}")


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
def pack_cmd(
    out: Annotated[Path, typer.Option("--out", help="Empty or new folder for the shards.")],
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="minilm, a model folder or a tokenizer.json.")
    ] = "minilm",
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per row.")] = 800,
    seed: Annotated[int, typer.Option("--seed", help="Shuffle seed.")] = 0,
    source: SourceFilterOpt = "all",
    keywords: KeywordOpt = None,
    users: UserOpt = None,
    label: LabelOpt = None,
    since: FromOpt = None,
    until: ToOpt = None,
    mode: ModeOpt = "any",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tokenize a query's records into shuffled fixed-length shards plus manifest.json."""
    from swarmpress.data.pack import pack
    from swarmpress.data.query import iter_query

    q = _query(source, keywords, users, label, since, until, 1, mode, None)
    st = _store(store)
    bar = _spinner()
    with _guard(), bar:
        task = bar.add_task("packing")

        def show(n: int) -> None:
            bar.update(task, description=f"{n} records")

        manifest = pack(iter_query(st, q), out, tokenizer, seq_len, seed, progress=show)
    if as_json:
        print(json.dumps(manifest, indent=2))
        return
    console.print(f"{manifest['records']} records -> {manifest['rows']} rows of {seq_len} "
                  f"tokens in {len(manifest['shards'])} shard(s) at {out} "
                  f"(train with: swarmpress swarm train --text {out})")  # fmt: skip
