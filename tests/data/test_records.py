"""The record schema: times to UTC, labels lowercased, sizes counted, bad fields named."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from swarmpress.data.records import (
    MAX_CONTENT,
    RecordError,
    bucket_of,
    make_record,
    parse_record,
    parse_time,
)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T14:00:00+02:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),  # naive: UTC
        (1772366400, datetime(2026, 3, 1, 12, tzinfo=UTC)),
        (1772366400.5, datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        (datetime(2026, 3, 1, 7, tzinfo=timezone(timedelta(hours=-5))),
         datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_times_become_utc(value, expected):
    assert parse_time(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "", None, True, "2026-13-01", 1e20, [1]])
def test_bad_times_name_the_field(value):
    with pytest.raises(RecordError, match=r"^when: "):
        parse_time(value, "when")


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+01:00",  # before the year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after the year 9999 in UTC
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_times_past_the_ends_of_the_calendar_name_the_field(value):
    with pytest.raises(RecordError, match=r"^when: .* is outside years 1-9999"):
        parse_time(value, "when")
    with pytest.raises(RecordError, match=r"^datetime: .* is outside years 1-9999"):
        make_record("u1", value, "local", {"text": "x"})


def test_make_record_fills_size_bucket_and_label():
    r = make_record("u1", "2026-03-01T12:30:00Z", "reddit", {"text": "héllo", "author": "A"},
                    "  R/Python ")  # fmt: skip
    assert r.label == "r/python"
    assert r.size == len('{"author":"A","text":"héllo"}'.encode())
    assert r.bucket == bucket_of(r.datetime) == int(r.datetime.timestamp()) // 3600
    j = r.to_json()
    assert j["datetime"] == "2026-03-01T12:30:00Z" and j["bucket"] == r.bucket
    assert parse_record(j) == r  # an export reads back as the same record


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"uri": "", "datetime": 0, "source": "x", "content": {}}, "uri"),
        ({"uri": "u", "datetime": "soon", "source": "x", "content": {}}, "datetime"),
        ({"uri": "u", "datetime": 0, "source": "Bad Source", "content": {}}, "source"),
        ({"uri": "u", "datetime": 0, "source": "x", "content": "text"}, "content"),
        ({"uri": "u", "datetime": 0, "source": "x", "content": {}, "label": 5}, "label"),
        ({"uri": "u", "datetime": 0, "source": "x", "content": {}, "extra": 1}, "extra"),
        ({"datetime": 0, "source": "x", "content": {}}, "uri"),
    ],
)
def test_bad_records_name_the_field(raw, field):
    with pytest.raises(RecordError, match=rf"^{field}"):
        parse_record(raw)


def test_content_limits():
    with pytest.raises(RecordError, match=r"content: .*limit"):
        make_record("u", 0, "x", {"text": "a" * (MAX_CONTENT + 1)})
    with pytest.raises(RecordError, match=r"content\.text: not JSON"):
        make_record("u", 0, "x", {"text": object()})
    with pytest.raises(RecordError, match="must be a JSON object"):
        make_record("u", 0, "x", ["text"])


def test_text_is_title_and_body():
    r = make_record("u", 0, "x", {"title": "T", "text": "body", "score": 3})
    assert r.text == "T\nbody"
    assert make_record("u", 0, "x", {"score": 3}).text == ""
