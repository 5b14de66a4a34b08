"""Reddit and X clients against a local HTTP server that replays recorded answers: paging,
throttling (429 + Retry-After / x-rate-limit-reset), server errors, bad credentials, broken
JSON. Nothing here reaches the internet."""

from __future__ import annotations

import time

import pytest

from swarmpress.data.collect import collect
from swarmpress.data.sources.http import AuthError, FetchError, JsonClient, retry_after
from swarmpress.data.sources.local import SourceError
from swarmpress.data.sources.reddit import RedditSource
from swarmpress.data.sources.x import XSource, build_query
from swarmpress.data.store import Store
from tests.data.conftest import listing, post


def client(url: str, sleeps: list, **kw) -> JsonClient:
    return JsonClient(url, sleep=sleeps.append, backoff=0.01, **kw)


def test_reddit_pages_and_records(server, tmp_path):
    server.add("/r/Python/new.json", 200, listing([post(3), post(2)], "t3_p2"))
    server.add("/r/Python/new.json", 200, listing([post(1), {"kind": "more"}], None))
    src = RedditSource(server.url, client(server.url, []))
    items = list(src.items(["r/Python"], limit=10))
    recs = [r for r, _ in items if r]
    assert [r.content["title"] for r in recs] == ["Post 3", "Post 2", "Post 1"]
    r = recs[0]
    assert r.uri == "https://www.reddit.com/r/Python/comments/p3/post_3/"
    assert r.label == "r/python" and r.source == "reddit" and r.content["author"] == "user0"
    assert r.content["scores"] == {"score": 3, "num_comments": 6}
    assert r.datetime.timestamp() == 1772366400 + 180
    assert [e for _, e in items if e] == ["reddit /r/Python/new.json: not a post or comment: "
                                          "{'kind': 'more'}"]  # fmt: skip
    assert server.log[1][1]["after"] == ["t3_p2"] and src.cursor is None
    server.routes["/r/Python/new.json"] = [
        (200, {}, listing([post(3), post(2)], "t3_p2")),
        (200, {}, listing([post(1), {"kind": "more"}], None)),
    ]
    s = Store(str(tmp_path / "r.db"))
    stats = collect(s, RedditSource(server.url, client(server.url, [])).items(["r/Python"]),
                    "reddit")  # fmt: skip
    assert (stats["inserted"], stats["skipped"]) == (3, 1)


def test_reddit_search_query(server):
    server.add("/r/a+b/search.json", 200, listing([post(1)], None))
    src = RedditSource(server.url, client(server.url, []))
    list(src.items(["r/a", "b"], ["gpu", "deep learning"], "all"))
    _, q, _ = server.log[0]
    assert q["q"] == ['gpu AND "deep learning"'] and q["restrict_sr"] == ["1"]
    assert q["sort"] == ["new"]


def test_throttling_is_waited_out(server):
    sleeps: list[float] = []
    server.add("/r/x/new.json", 429, {"message": "Too Many Requests"}, {"Retry-After": "7"})
    server.add("/r/x/new.json", 503, {"message": "busy"})
    server.add("/r/x/new.json", 200, listing([post(1, "x")], None))
    c = client(server.url, sleeps)
    recs = [r for r, _ in RedditSource(server.url, c).items(["r/x"])]
    assert len(recs) == 1
    assert sleeps[0] == 7.0 and 0 < sleeps[1] < 1 and c.requests == 3 and c.waited > 7


def test_retry_after_forms():
    assert retry_after("12") == 12.0
    later = time.time() + 30
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    assert 25 < retry_after(date) <= 31
    assert retry_after("soon") is None and retry_after(None) is None


def test_errors_say_what_went_wrong(server):
    server.add("/bad", 401, {"message": "Unauthorized"})
    server.add("/gone", 404, {"message": "Not Found"})
    server.add("/html", 200, b"<html>blocked</html>")
    server.add("/down", 500, {"message": "oops"})
    server.add("/slow", 429, {}, {"Retry-After": "3600"})
    sleeps: list[float] = []
    c = client(server.url, sleeps, retries=2)
    with pytest.raises(AuthError, match="401 Unauthorized"):
        c.get("/bad")
    with pytest.raises(FetchError, match="404 Not Found"):
        c.get("/gone")
    with pytest.raises(FetchError, match="not JSON"):
        c.get("/html")
    with pytest.raises(FetchError, match="gave up after 3 tries: 500 oops"):
        c.get("/down")
    with pytest.raises(FetchError, match="asked to wait 3600 s"):
        c.get("/slow")
    assert len(sleeps) == 2  # only the 500s slept, and only between tries


def tweet(i: int, author: str = "11") -> dict:
    return {"id": f"{1000 + i}", "text": f"tweet {i} #AI #ml", "author_id": author,
            "created_at": f"2026-03-01T12:0{i}:00.000Z", "lang": "en",
            "public_metrics": {"like_count": i, "retweet_count": 0},
            "entities": {"hashtags": [{"start": 8, "end": 11, "tag": "AI"}]},
            "referenced_tweets": [{"type": "replied_to", "id": "999"}]}  # fmt: skip


def test_x_needs_a_token(monkeypatch):
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    monkeypatch.delenv("SWARMPRESS_X_BEARER_TOKEN", raising=False)
    with pytest.raises(AuthError, match="X_BEARER_TOKEN"):
        XSource("http://127.0.0.1:9")


def test_x_pages_rate_limit_and_records(server, monkeypatch):
    monkeypatch.setenv("X_BEARER_TOKEN", "secret-token")
    path = "/2/tweets/search/recent"
    users = {"users": [{"id": "11", "username": "ada"}]}
    server.add(path, 429, {"title": "Too Many Requests"},
               {"x-rate-limit-reset": str(int(time.time()) + 5)})  # fmt: skip
    server.add(path, 200, {"data": [tweet(1), tweet(2)], "includes": users,
                           "meta": {"next_token": "abc", "result_count": 2}})  # fmt: skip
    server.add(path, 200, {"data": [tweet(3), {"text": "no id"}], "includes": users,
                           "meta": {"result_count": 2}})  # fmt: skip
    sleeps: list[float] = []
    src = XSource(server.url)
    src.client.sleep = sleeps.append
    items = list(src.items(["gpu"], ["@ada"], None, limit=50))
    recs = [r for r, _ in items if r]
    assert [r.uri for r in recs] == [f"https://x.com/ada/status/100{i}" for i in (1, 2, 3)]
    r = recs[0]
    assert r.label == "#ai" and r.content["author"] == "ada" and r.content["parent"] == "999"
    assert r.content["scores"]["like_count"] == 1 and r.source == "x"
    assert sum(e is not None for _, e in items) == 1
    assert 3 <= sleeps[0] <= 6
    _, q, headers = server.log[-1]
    assert headers["Authorization"] == "Bearer secret-token"
    assert q["query"] == ["gpu from:ada"] and q["next_token"] == ["abc"]


def test_x_bad_credentials(server, monkeypatch):
    monkeypatch.setenv("X_BEARER_TOKEN", "wrong")
    server.add("/2/tweets/search/recent", 403, {"title": "Forbidden", "detail": "bad token"})
    with pytest.raises(AuthError, match="403 bad token"):
        list(XSource(server.url).items(["a"]))


def test_x_query_forms():
    assert build_query(["a", "b c"], [], None, "any") == '(a OR "b c")'
    assert build_query(["a", "b"], ["@u", "v"], "AI", "all") == "(a b) (from:u OR from:v) #AI"
    with pytest.raises(SourceError, match="needs keywords"):
        build_query([], [], None, "any")


def test_malformed_items_are_counted_not_raised(server, monkeypatch):
    monkeypatch.setenv("X_BEARER_TOKEN", "t")
    bad = [tweet(1) | {"entities": ["not", "a", "dict"]},
           tweet(2) | {"entities": {"hashtags": {"tag": "x"}}},
           {"id": 3, "created_at": 5}, "string", tweet(4)]  # fmt: skip
    server.add("/2/tweets/search/recent", 200, {"data": bad, "includes": [], "meta": "x"})
    items = list(XSource(server.url).items(["a"]))
    good = [r for r, _ in items if r]
    assert len(items) == 5 and len(good) >= 2 and all(r.source == "x" for r in good)
    broken = {"kind": "t3", "data": {"permalink": 5, "created_utc": 1}}
    server.add("/r/q/new.json", 200, listing([broken, post(1, "q")], None))
    items = list(RedditSource(server.url, client(server.url, [])).items(["r/q"]))
    assert [bool(r) for r, _ in items] == [False, True]


@pytest.mark.parametrize("token", ["  ", "tok en", "tökén"])
def test_x_bad_tokens(monkeypatch, token):
    monkeypatch.setenv("X_BEARER_TOKEN", token)
    monkeypatch.delenv("SWARMPRESS_X_BEARER_TOKEN", raising=False)
    with pytest.raises(AuthError):
        XSource("http://127.0.0.1:9")


# ---------------------------------------------------------------- no network (issue 16)
def _network_error():
    from swarmpress.data.sources.http import NetworkError

    return NetworkError


def _no_proxies(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


def test_a_host_that_does_not_resolve_fails_at_once(monkeypatch):
    """No DNS is no network: one try, no sleep, the host named (reddit's base URL option
    pointed at a name that cannot resolve)."""
    _no_proxies(monkeypatch)
    sleeps: list[float] = []
    base = "http://swarmpress-test.invalid"
    c = client(base, sleeps)
    with pytest.raises(_network_error(), match=r"no network.*swarmpress-test\.invalid"):
        list(RedditSource(base, c).items(["r/python"]))
    assert (c.requests, sleeps) == (1, [])


def test_a_refused_connection_fails_at_once(monkeypatch):
    import socket

    _no_proxies(monkeypatch)
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    c = client(f"http://127.0.0.1:{port}", sleeps)
    with pytest.raises(_network_error(), match=rf"no network.*127\.0\.0\.1:{port}"):
        c.get("/r/x/new.json")
    assert (c.requests, sleeps) == (1, [])


def _failing(exc_type, cause: BaseException, counter: list):
    import httpx

    def handler(request):
        counter.append(request.url.host)
        raise exc_type(str(cause), request=request) from cause

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    "errno_, reason",
    [("ENETUNREACH", "Network is unreachable"), ("EHOSTUNREACH", "No route to host"),
     ("ENETDOWN", "Network is down")],
)  # fmt: skip
def test_an_unroutable_host_fails_at_once(errno_, reason):
    import errno

    import httpx

    calls: list[str] = []
    sleeps: list[float] = []
    cause = OSError(getattr(errno, errno_), reason)
    c = client("http://10.255.255.1", sleeps, transport=_failing(httpx.ConnectError, cause, calls))
    with pytest.raises(_network_error(), match=r"no network.*10\.255\.255\.1"):
        c.get("/x")
    assert (len(calls), sleeps) == (1, [])


@pytest.mark.parametrize(
    "kind, cause",
    [("ReadTimeout", TimeoutError("timed out")), ("ConnectTimeout", TimeoutError("timed out")),
     ("ConnectError", ConnectionResetError(104, "Connection reset by peer")),
     ("RemoteProtocolError", OSError("server disconnected"))],
)  # fmt: skip
def test_transient_transport_errors_are_retried(kind, cause):
    import httpx

    calls: list[str] = []
    sleeps: list[float] = []
    c = client("http://example.test", sleeps, retries=3,
               transport=_failing(getattr(httpx, kind), cause, calls))  # fmt: skip
    with pytest.raises(FetchError, match="gave up after 4 tries") as info:
        c.get("/x")
    assert not isinstance(info.value, _network_error())
    assert len(calls) == 4 and len(sleeps) == 3


def test_an_answer_nested_too_deeply_is_a_fetch_error(server):
    server.add("/deep", 200, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(FetchError, match="not JSON"):
        client(server.url, []).get("/deep")


def test_hostile_values_in_an_answer_are_counted_items(server):
    """A listing whose posts carry NaN, lone surrogates or deep nesting: those posts are
    skipped and counted, the others stored."""
    bad_nan = post(2)
    bad_nan["data"]["score"] = float("nan")
    bad_sur = post(3)
    bad_sur["data"]["title"] = "\ud800"
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    bad_deep = post(4)
    bad_deep["data"]["score"] = deep
    body = listing([post(1), bad_nan, bad_sur, bad_deep, post(5)], None)
    import json

    server.add("/r/h/new.json", 200, json.dumps(body).encode())  # NaN as JSON's NaN literal
    items = list(RedditSource(server.url, client(server.url, [])).items(["r/h"]))
    assert [r.content["title"] for r, _ in items if r] == ["Post 1", "Post 5"]
    assert sum(e is not None for _, e in items) == 3
