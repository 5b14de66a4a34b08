"""The sources records come from, by name, and the one factory that opens any of them.

`open_source(name, ...)` gives (items, resume) for a collection: the (record, error) items
to store and a function that says, at any moment, the source's cursor to resume from
(None for local files, which are read to the end each time). `job_items` is the same
factory as a collection job (swarmpress.data.jobs) calls it, from the job's spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from swarmpress.data.sources.local import SourceError

if TYPE_CHECKING:
    from swarmpress.data.jobs import JobSpec

SOURCES = ("local", "reddit", "x")
NETWORK_PAGE = 1000  # items a network source reads when no limit is given

Resume = Callable[[], str | None]


def _split(values: Iterable[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _unknown(bad: str, extra: str = "") -> SourceError:
    return SourceError(f"unknown source {bad}; known: {', '.join(SOURCES)}{extra}")


def check_sources(names: Sequence[str]) -> list[str]:
    """The source names of a comma-separated list, or SourceError naming the unknown ones."""
    sources = _split(names)
    unknown = [x for x in sources if x not in SOURCES]
    if unknown or not sources:
        raise _unknown(", ".join(map(repr, unknown)) or repr(",".join(names)))
    return sources


def query_source(
    name: str | None,
    stored: Callable[[str], bool] | None = None,
    stored_names: Callable[[], Iterable[str]] | None = None,
) -> str | None:
    """The source a query (search, export, pack) selects: None for `all`, a source of the
    registry, or one the store holds records of (`stored(name)`: a JSONL file may carry
    any source name); else the SourceError `collect` gives, listing the known sources and
    (`stored_names()`) those the store holds."""
    if name is None or name == "all":
        return None
    if name in SOURCES or (stored is not None and name and stored(name)):
        return name
    held = sorted(set(stored_names() if stored_names is not None else ()) - set(SOURCES))
    extra = f"; in the store also: {', '.join(held)}" if held else ""
    raise _unknown(repr(name), f"{extra} (or all)")


def open_source(
    source: str,
    *,
    path: str | None = None,
    keywords: Sequence[str] = (),
    users: Sequence[str] = (),
    label: str | None = None,
    mode: str = "any",
    limit: int | None = None,
    cursor: str | None = None,
) -> tuple[Iterable[Any], Resume]:
    """(items, resume) of one source; network sources page until `limit` (default
    NETWORK_PAGE), from `cursor` when one is given. `label` is reddit's r/NAME[,r/OTHER]
    subreddits and x's #hashtag."""
    if source not in SOURCES:
        raise _unknown(repr(source))
    if source == "local":
        from swarmpress.data.sources.local import read_local

        return read_local(path), lambda: None
    if source == "reddit":
        from swarmpress.data.sources.reddit import RedditSource

        subs = [x for x in _split([label] if label else []) if x.lower().startswith("r/")]
        reddit = RedditSource()
        items = reddit.items(subs, _split(keywords), mode, limit or NETWORK_PAGE, cursor)
        return items, lambda: reddit.resume
    from swarmpress.data.sources.x import XSource

    x = XSource()
    items = x.items(_split(keywords), _split(users), label, mode, limit or NETWORK_PAGE, cursor)
    return items, lambda: x.resume


def job_items(spec: JobSpec, source: str, cursor: str | None) -> tuple[Iterable[Any], Resume]:
    """What a collection job reads from `source` this round (data.jobs.run_job's default)."""
    return open_source(source, path=spec.path, keywords=spec.keywords, users=spec.users,
                       label=spec.label, mode=spec.mode, limit=spec.page_limit,
                       cursor=cursor)  # fmt: skip
