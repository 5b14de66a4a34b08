"""Reddit through its public JSON listings: a subreddit's newest posts, or a search
(site-wide or within subreddits), page by page with the listing's `after` token.

No credentials are needed for the public listings; Reddit throttles anonymous clients, so
429s are expected and honoured (Retry-After, backoff: sources.http). Each post (t3) or
comment (t1) becomes a record: uri = the permalink, time = created_utc, label = r/NAME,
content = title, text (selftext or body), author, scores, parent, media. The base URL can
point elsewhere (env SWARMPRESS_REDDIT_URL), which is how the tests serve recorded answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from swarmpress.data.records import RecordError, make_record
from swarmpress.data.sources.http import JsonClient
from swarmpress.data.sources.local import ITEM_ERRORS, Item

BASE = "https://www.reddit.com"
PAGE = 100


def _content(d: dict[str, Any], kind: str) -> dict[str, Any]:
    c: dict[str, Any] = {"kind": "post" if kind == "t3" else "comment"}
    if d.get("title"):
        c["title"] = d["title"]
    text = d.get("selftext") if kind == "t3" else d.get("body")
    if text:
        c["text"] = text
    if d.get("author"):
        c["author"] = d["author"]
    scores = {k: d[k] for k in ("score", "num_comments", "upvote_ratio") if k in d}
    if scores:
        c["scores"] = scores
    if d.get("parent_id"):
        c["parent"] = d["parent_id"]
    if kind == "t3" and d.get("url") and not d.get("is_self", True):
        c["media"] = d["url"]
    return c


def to_record(child: Any, base: str = BASE):
    """A Record from one listing child; RecordError for a child that is not a post or
    comment or lacks what a record needs."""
    if not isinstance(child, dict) or child.get("kind") not in ("t3", "t1"):
        raise RecordError(f"not a post or comment: {str(child)[:80]}")
    d = child.get("data")
    if not isinstance(d, dict) or not d.get("permalink") or "created_utc" not in d:
        raise RecordError("a listing item without permalink or created_utc")
    sub = d.get("subreddit")
    label = f"r/{sub}" if isinstance(sub, str) and sub else None
    return make_record(base.rstrip("/") + d["permalink"], d["created_utc"], "reddit",
                       _content(d, child["kind"]), label)  # fmt: skip


class RedditSource:
    """Pages of a listing as Items (record or error)."""

    def __init__(self, base: str | None = None, client: JsonClient | None = None) -> None:
        self.base = base or os.environ.get("SWARMPRESS_REDDIT_URL") or BASE
        self.client = client or JsonClient(self.base)

    def _path(self, subreddits: list[str], keywords: list[str], mode: str) -> tuple[str, dict]:
        subs = "+".join(s.strip().removeprefix("r/") for s in subreddits if s.strip())
        if keywords:
            joiner = " OR " if mode == "any" else " AND "
            q = joiner.join(f'"{k}"' if " " in k else k for k in keywords)
            path = f"/r/{subs}/search.json" if subs else "/search.json"
            params = {"q": q, "sort": "new", "limit": PAGE}
            if subs:
                params["restrict_sr"] = "1"
            return path, params
        if not subs:
            return "/r/all/new.json", {"limit": PAGE}
        return f"/r/{subs}/new.json", {"limit": PAGE}

    def items(
        self,
        subreddits: list[str] | None = None,
        keywords: list[str] | None = None,
        mode: str = "any",
        limit: int = 1000,
        after: str | None = None,
    ) -> Iterator[Item]:
        """Newest first until `limit` items or the listing ends; `after` resumes a listing.
        `self.cursor` holds the last page's `after` token (for resuming a job)."""
        path, params = self._path(subreddits or [], keywords or [], mode)
        self.cursor = self.resume = after
        n = 0
        while n < limit:
            page = dict(params, limit=min(PAGE, limit - n))
            if self.cursor:
                page["after"] = self.cursor
            self.resume = self.cursor  # resuming here re-reads this page; dedup absorbs it
            body = self.client.get(path, page)
            data = body.get("data") if isinstance(body, dict) else None
            children = data.get("children") if isinstance(data, dict) else None
            if not isinstance(children, list):
                yield None, f"{path}: the answer is not a listing"
                return
            for child in children:
                n += 1
                try:
                    yield to_record(child), None  # the canonical uri, whatever served it
                except ITEM_ERRORS as exc:
                    yield None, f"reddit {path}: {exc}"  # a malformed item: counted, skipped
            after = data.get("after")
            self.cursor = after if isinstance(after, str) else None
            if not self.cursor or not children:
                return
