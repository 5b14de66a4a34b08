"""X (Twitter) through the v2 recent-search API, with a bearer token from the environment.

`GET /2/tweets/search/recent` with the query built from keywords (any/all), users
(`from:NAME`) and a hashtag label, 100 posts a page, following `meta.next_token`. The token
comes from env X_BEARER_TOKEN (or SWARMPRESS_X_BEARER_TOKEN); without one, or when X refuses
it, the error says so before anything else happens. Rate limits (429 with
x-rate-limit-reset) are waited out (sources.http). Each post becomes a record: uri
https://x.com/NAME/status/ID, time = created_at, label = its first hashtag, content = text,
author, scores (public metrics), parent (the post it replies to or quotes), lang.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from swarmpress.data.records import RecordError, make_record
from swarmpress.data.sources.http import AuthError, JsonClient
from swarmpress.data.sources.local import ITEM_ERRORS, Item, SourceError

BASE = "https://api.x.com"
TOKEN_ENV = ("X_BEARER_TOKEN", "SWARMPRESS_X_BEARER_TOKEN")
PAGE = 100


def bearer_token() -> str:
    for name in TOKEN_ENV:
        token = os.environ.get(name, "").strip()
        if token:
            if not token.isascii() or any(c.isspace() for c in token):
                raise AuthError(f"env {name} does not hold a bearer token (spaces or non-ASCII)")
            return token
    raise AuthError(f"the X source needs a bearer token in env {TOKEN_ENV[0]}")


def build_query(keywords: list[str], users: list[str], label: str | None, mode: str) -> str:
    joiner = " OR " if mode == "any" else " "
    parts = []
    if keywords:
        kw = joiner.join(f'"{k}"' if " " in k else k for k in keywords)
        parts.append(f"({kw})" if len(keywords) > 1 else kw)
    if users:
        who = " OR ".join(f"from:{u.lstrip('@')}" for u in users)
        parts.append(f"({who})" if len(users) > 1 else who)
    if label:
        parts.append(label if label.startswith("#") else f"#{label}")
    if not parts:
        raise SourceError("an X search needs keywords (-k), users (-u) or a #label")
    return " ".join(parts)


def to_record(post: Any, users: dict[str, str]):
    """A Record from one post of `data` (users: author id -> username)."""
    if not isinstance(post, dict) or not post.get("id") or not post.get("created_at"):
        raise RecordError(f"not a post: {str(post)[:80]}")
    name = users.get(str(post.get("author_id")), "i")
    content: dict[str, Any] = {"text": post.get("text", ""), "author": name}
    if isinstance(post.get("public_metrics"), dict):
        content["scores"] = post["public_metrics"]
    refs = post.get("referenced_tweets")
    if isinstance(refs, list) and refs and isinstance(refs[0], dict):
        content["parent"] = refs[0].get("id")
    if post.get("lang"):
        content["lang"] = post["lang"]
    entities = post.get("entities")
    tags = entities.get("hashtags") if isinstance(entities, dict) else None
    first = tags[0] if isinstance(tags, list) and tags and isinstance(tags[0], dict) else {}
    label = f"#{first['tag']}" if isinstance(first.get("tag"), str) and first["tag"] else None
    return make_record(f"https://x.com/{name}/status/{post['id']}", post["created_at"], "x",
                       content, label)  # fmt: skip


class XSource:
    """Pages of a recent search as Items (record or error)."""

    def __init__(self, base: str | None = None, client: JsonClient | None = None) -> None:
        self.base = base or os.environ.get("SWARMPRESS_X_URL") or BASE
        self.client = client or JsonClient(
            self.base, headers={"Authorization": f"Bearer {bearer_token()}"}
        )

    def items(
        self,
        keywords: list[str] | None = None,
        users: list[str] | None = None,
        label: str | None = None,
        mode: str = "any",
        limit: int = 1000,
        after: str | None = None,
    ) -> Iterator[Item]:
        query = build_query(keywords or [], users or [], label, mode)
        params = {
            "query": query,
            "tweet.fields": "created_at,author_id,public_metrics,entities,referenced_tweets,lang",
            "expansions": "author_id",
            "user.fields": "username",
        }
        self.cursor = self.resume = after
        n = 0
        while n < limit:
            page = dict(params, max_results=max(10, min(PAGE, limit - n)))
            if self.cursor:
                page["next_token"] = self.cursor
            self.resume = self.cursor  # resuming here re-reads this page; dedup absorbs it
            body = self.client.get("/2/tweets/search/recent", page)
            if not isinstance(body, dict):
                yield None, "x: the answer is not a JSON object"
                return
            inc = body.get("includes") if isinstance(body.get("includes"), dict) else {}
            users_ = inc.get("users") if isinstance(inc.get("users"), list) else []
            names = {str(u.get("id")): str(u.get("username", "i")) for u in users_
                     if isinstance(u, dict)}  # fmt: skip
            posts = body.get("data") if isinstance(body.get("data"), list) else []
            for post in posts:
                if n >= limit:
                    return
                n += 1
                try:
                    yield to_record(post, names), None
                except ITEM_ERRORS as exc:
                    yield None, f"x: {exc}"  # a malformed item: counted, skipped
            meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
            token = meta.get("next_token")
            self.cursor = token if isinstance(token, str) else None
            if not self.cursor or not posts:
                return
