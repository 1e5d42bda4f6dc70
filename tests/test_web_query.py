"""Issue 12 item 11: every query parameter of every endpoint is checked before its handler;
a bad one is a 400 with a JSON error (text outside /api/) naming it, and nothing is logged."""

from __future__ import annotations

import logging
import random

import pytest

from test_web_api import app_for, rig  # noqa: F401 (fixtures)
from web import query

ENDPOINTS = ["/api/status", "/api/buffer/status", "/api/buffer/health", "/api/buffer/metrics",
             "/api/buffer/writer/metrics", "/metrics", "/", "/static/status.js"]

BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "-5", "0", "9", "3601", "1e400", "1e308", "abc", "", " ",
               "10s", "0x20", "1_000", "٣٠٠", "300\x00", "9" * 100]


@pytest.mark.parametrize("text", BAD_NUMBERS)
def test_status_seconds_that_is_no_number_in_bounds_is_400_json_and_logs_nothing(rig, app_for, caplog, text):
    client = app_for(rig.name)
    with caplog.at_level(logging.DEBUG):
        r = client.get("/api/status", query_string={"seconds": text})
    assert r.status_code == 400, (text, r.status_code)
    body = r.get_json()
    assert body["status"] == 400 and body["parameter"] == "seconds" and "seconds" in body["message"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING or rec.exc_info]


def test_good_values_still_work_and_are_capped_at_what_is_kept(rig, app_for):
    client = app_for(rig.name, WEB_HISTORY_S=60)
    for text in ("10", "60", "300", "3600", "59.5", "1e2"):
        assert client.get(f"/api/status?seconds={text}").status_code == 200, text
    assert client.get("/api/status").status_code == 200
    assert client.get("/?lang=ko").status_code == 200 and client.get("/?lang=en").status_code == 200


@pytest.mark.parametrize("url, name, words", [
    ("/api/status?seconds=60&seconds=70", "seconds", "more than once"),
    ("/api/buffer/status?x=1", "x", "not accepted here (accepted: none)"),
    ("/api/status?secnods=60", "secnods", "accepted: seconds"),
    ("/metrics?seconds=1", "seconds", "not accepted"),
    ("/?lang=fr", "lang", "one of ko, en"),
    ("/?lang=ko&lang=en", "lang", "more than once"),
])
def test_unknown_repeated_and_bad_choice_parameters_are_refused(rig, app_for, url, name, words):
    r = app_for(rig.name).get(url)
    assert r.status_code == 400
    text = r.get_data(as_text=True)
    assert name in text and words in text
    if url.startswith("/api/"):
        assert r.get_json()["parameter"] == name


def test_fuzzing_every_endpoint_gives_no_500_and_no_logged_traceback(rig, app_for, caplog):
    rig.publish(500)
    rig.commit(200)
    client = app_for(rig.name)
    rng = random.Random(12)
    names = ["seconds", "lang", "x", "", "seconds[]", "%00", "a" * 200]
    values = BAD_NUMBERS + ["10", "300", "ko", "en", "%ff%fe", "\u202e", "'; DROP", "a" * 5000]
    with caplog.at_level(logging.DEBUG):
        for _ in range(400):
            url = rng.choice(ENDPOINTS)
            pairs = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randint(0, 3))]
            r = client.get(url, query_string=pairs)
            assert r.status_code in (200, 400, 503), (url, pairs, r.status_code)
            if r.status_code == 400 and url.startswith("/api/"):
                assert r.get_json()["status"] == 400
            if r.status_code != 400:  # a request let through had only parameters its endpoint takes, each once
                assert all(query.PARAMS.get(_endpoint(url), {}).get(n) for n, _ in pairs), (url, pairs)
    assert not [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]


def _endpoint(url: str) -> str:
    return {"/api/status": "api.status", "/": "page.index"}.get(url, "")
