"""The pure matcher of media keys in column values (charhub_ops.cleanup.media_refs.references_in): a table of
values as psycopg returns them (text, text[] as a list, json/jsonb as dicts and lists) against known keys."""

from __future__ import annotations

import pytest

from charhub_ops.cleanup.media_refs import KEY_MAX, _narrowing, references_in

KEYS = {"prod/a.png", "prod/b.png", "prod/dir/c d.png", "prod/x(1),y.png", "dev/a.png", "prod/a", "prod/é.png",
        "prod/q?.png"}
PROD = ["prod/"]

CASES = [
    # (value, prefixes, referenced)
    ("prod/a.png", PROD, {"prod/a.png"}),
    ("https://media.charhub.app/prod/a.png", PROD, {"prod/a.png"}),
    ("https://media.charhub.app/prod/a.png?v=3&w=200", PROD, {"prod/a.png"}),
    ("https://media.charhub.app/prod/a.png#frag", PROD, {"prod/a.png"}),
    (["x", "https://cdn/prod/b.png?v=1"], PROD, {"prod/b.png"}),  # text[]
    ([["prod/a.png"], [None, "prod/b.png"]], PROD, {"prod/a.png", "prod/b.png"}),  # nested array
    ({"images": [{"url": "https://cdn/prod/a.png", "w": 3}], "cover": {"src": "prod/b.png"}, "n": 1, "ok": True},
     PROD, {"prod/a.png", "prod/b.png"}),  # json nested
    ({"prod/a.png": {"alt": "a key used as an object key"}}, PROD, {"prod/a.png"}),
    ('{"url": "https://cdn/prod/a.png"}', PROD, {"prod/a.png"}),  # JSON kept in a text column
    ('{"url":"https:\\/\\/cdn\\/prod\\/a.png"}', PROD, {"prod/a.png"}),  # JSON-escaped slashes
    ("https://cdn/prod/dir/c%20d.png", PROD, {"prod/dir/c d.png"}),  # percent-encoded
    ("https%3A%2F%2Fcdn%2Fprod%2Fa.png", PROD, {"prod/a.png"}),  # an encoded URL in a query parameter
    ("https://cdn/img?src=https%253A%252F%252Fcdn%252Fprod%252Fb.png", PROD, {"prod/b.png"}),  # twice encoded
    ("https://cdn/prod/%C3%A9.png", PROD, {"prod/é.png"}),
    ("Look ![x](https://cdn/prod/a.png) and ![y](https://cdn/prod/b.png \"title\").", PROD,
     {"prod/a.png", "prod/b.png"}),  # markdown, several keys in one value
    ("[prod/a.png, prod/b.png]", PROD, {"prod/a.png", "prod/b.png"}),
    ('{prod/a.png,"prod/dir/c d.png"}', PROD, {"prod/a.png", "prod/dir/c d.png"}),  # array text form
    ("prod/dir/c d.png", PROD, {"prod/dir/c d.png"}),  # a key with a space, kept raw
    ("see prod/x(1),y.png!", PROD, {"prod/x(1),y.png"}),  # punctuation inside a key
    ("prod/q?.png", PROD, {"prod/q?.png"}),  # a raw key holding '?'
    ("prod/a.png\n", PROD, {"prod/a.png"}),
    ("prod/a.png.bak", PROD, set()),
    ("prod/a/b.png prod/a-thumb.png", PROD, set()),  # prod/a is neither a directory nor a stem of these
    ("prod/ab.png", PROD, set()),  # prod/a is not referenced by prod/ab.png
    ("https://cdn/dev/a.png", PROD, set()),  # dev/ is not scanned here
    ("https://cdn/dev/a.png", ["dev/"], {"dev/a.png"}),
    ("https://cdn/prod/a.png https://cdn/dev/a.png", ["prod/", "dev/"], {"prod/a.png", "dev/a.png"}),
    ("myprod/a.png", PROD, set()),  # a prefix inside a word is not a prefix
    ("nothing here", PROD, set()),
    (None, PROD, set()),
    (42, PROD, set()),
    (b"prod/a.png", PROD, {"prod/a.png"}),
]


@pytest.mark.parametrize(("value", "prefixes", "expected"), CASES)
def test_references_in(value, prefixes, expected):
    assert references_in(value, KEYS, prefixes) == expected


def test_only_known_keys_are_returned_and_runs_stop_at_the_key_limit():
    assert references_in("prod/unknown.png prod/a.png", {"prod/a.png"}, PROD) == {"prod/a.png"}
    long_key = "prod/" + "k" * (KEY_MAX - 5)
    assert references_in(long_key + " tail", {long_key}, PROD) == {long_key}
    assert references_in(long_key + "k", {long_key + "k"}, PROD) == set()  # longer than any S3 key
    assert references_in("prod/ab", {"prod/a"}, PROD) == set()  # the run looks one character past the key


@pytest.mark.parametrize(("prefixes", "expected"), [
    (["prod/"], ["%prod%"]),
    (["prod/", "dev/", "media_x/"], ["%dev%", "%media\\_x%", "%prod%"]),  # LIKE's '_' escaped
    (["prod/", "é/"], None),  # nothing to narrow by: every row is read
])
def test_sql_narrowing_uses_text_that_survives_encoding(prefixes, expected):
    assert _narrowing(prefixes) == expected
