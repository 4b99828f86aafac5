"""The fleet page over real HTTP (uvicorn on loopback) without a browser: the JSON for scripts, ids from the
address that must never reach the store, the token, read-only access to a catalog that others keep writing."""
import http.client
import json
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from page_world import ROBOTS

from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.fleet.catalog import Catalog, CatalogRow
from robot_runtime.improvement_loop.page.app import PageServer, check_binding
from robot_runtime.improvement_loop.page.status import PageError, connect_readonly


def get(server: PageServer, path: str, headers: dict | None = None) -> tuple[int, str, dict]:
    """`path` sent exactly as written (no client-side normalisation of '..')."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


def test_api_status_has_the_pages_data_for_scripts(page, world):
    status, body, headers = get(page, "/api/status")
    assert status == 200 and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert [r["robot"] for r in data["robots"]] == list(ROBOTS)
    assert {r["robot"]: r["online"] for r in data["robots"]} == {"arm-1": True, "arm-2": True, "arm-3": False}
    assert data["current_cycle"]["state"] == "policy" and data["current_cycle"]["id"] == 4
    assert [d["kind"] for d in data["decisions"]] == ["gate", "canary", "promote", "gate", "canary", "rollback",
                                                      "gate"]
    assert data["decisions"][-1]["numbers"]["candidate"]["success_rate"] == 0.58
    assert sum(data["fleet_rates"][v]["overall"]["episodes"] for v in data["fleet_rates"]) == len(world.episode_ids)
    conn = sqlite3.connect(world.catalog)
    try:
        assert data["correlation"]["r"] == pytest.approx(records.gate_vs_fleet(conn).r)
    finally:
        conn.close()


@pytest.mark.parametrize("path, status", [
    ("/episodes/../x", 404), ("/episodes/%2e%2e", 400), ("/episodes/%2E%2E%2Fcatalog.sqlite", 404),
    ("/episodes/..%2f..%2fetc%2fpasswd", 404), ("/episodes/.hidden", 400), ("/episodes/a%00b", 400),
    ("/episodes/" + "a" * 200, 400), ("/episodes/arm-1-never-recorded", 404)])
def test_a_hostile_or_unknown_episode_id_gets_400_or_404(page, path, status):
    got, body, _ = get(page, path)
    assert got == status, body
    assert "SQLite format" not in body and "root:" not in body


def test_an_episode_page_is_its_viewer_page(page, world):
    status, body, _ = get(page, f"/episodes/{world.episode_ids[0]}")
    assert status == 200 and f"<title>{world.episode_ids[0]}" in body and 'id="timeline"' in body


def test_a_token_is_required_off_loopback_and_every_request_must_carry_it(world):
    with pytest.raises(PageError, match="needs a token"):
        check_binding("0.0.0.0", None)
    with pytest.raises(PageError, match="needs a token"):
        check_binding("fleet.example", None)
    with pytest.raises(PageError, match="at least 16"):
        check_binding("127.0.0.1", "short")
    with pytest.raises(PageError, match="needs a token"):
        PageServer(world.catalog, host="0.0.0.0")
    check_binding("::1", None)
    token = "a-long-enough-page-token"
    server = PageServer(world.catalog, token=token)
    try:
        for path in ("/", "/api/status", f"/episodes/{world.episode_ids[0]}", "/episodes/%2e%2e"):
            assert get(server, path)[0] == 401
            assert get(server, path, {"Authorization": "Bearer " + token[:-1] + "X"})[0] == 401
            assert get(server, path, {"Cookie": "fleet_page_token=wrong"})[0] == 401
        assert get(server, "/api/status", {"Authorization": f"Bearer {token}"})[0] == 200
        status, _, headers = get(server, f"/api/status?token={token}")
        assert status == 303 and headers["location"] == "/api/status"  # the token leaves the address bar
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=strict" in headers["set-cookie"]
        assert get(server, "/api/status", {"Cookie": headers["set-cookie"].split(";")[0]})[0] == 200
    finally:
        server.stop()


def test_the_page_only_reads_and_sees_what_writers_add_meanwhile(page, world):
    conn = connect_readonly(world.catalog)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM episodes")
    conn.close()
    catalog = Catalog(world.catalog)  # the ingest server goes on writing while the page serves
    try:
        catalog.add(CatalogRow("arm-9-late", "arm-9", "t", "reference@v2", "success", None, 10, 1, 100, time.time(),
                               time.time(), "0" * 64))
        robots = [r["robot"] for r in json.loads(get(page, "/api/status")[1])["robots"]]
        assert "arm-9" in robots
    finally:
        catalog.remove("arm-9-late")
        catalog.close()


def test_a_fresh_catalog_without_daemon_or_releases_still_renders(tmp_path):
    Catalog(tmp_path / "catalog.sqlite").close()
    server = PageServer(tmp_path / "catalog.sqlite")
    try:
        status, body, _ = get(server, "/")
        assert status == 200 and "no daemon has run on this catalog yet" in body and "none yet" in body
        assert json.loads(get(server, "/api/status")[1])["daemon"] is None
    finally:
        server.stop()


def test_a_decision_that_recorded_nan_is_shown_and_is_null_in_the_json(tmp_path):
    conn = records.connect(tmp_path / "catalog.sqlite")
    cycle = records.new_cycle(conn, "cfg", "m@1", tmp_path / "work")
    records.record_decision(conn, cycle.id, "gate", False, {"offline": {"ok": False, "max_parity_error": math.nan}},
                            "offline checks failed: NaN actions")
    conn.close()
    server = PageServer(tmp_path / "catalog.sqlite")
    try:
        status, body, _ = get(server, "/api/status")
        assert status == 200 and json.loads(body)["decisions"][0]["numbers"]["offline"]["max_parity_error"] is None
        status, body, _ = get(server, "/")
        assert status == 200 and "offline.max_parity_error: nan" in body and "NaN actions" in body
    finally:
        server.stop()


def test_the_command_line_says_what_is_wrong_without_a_traceback(tmp_path, world):
    script = str(Path(sys.executable).parent / "robot-runtime-page")
    cases = [(["--catalog", str(tmp_path / "missing.sqlite")], "no such file"),
             (["--catalog", str(world.catalog), "--host", "0.0.0.0"], "needs a token"),  # refused before binding
             (["--catalog", str(world.catalog), "--token-file", str(tmp_path / "nope")], "--token-file")]
    for args, message in cases:
        done = subprocess.run([script, *args], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin"})
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def test_text_from_robots_is_escaped_never_markup(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite")
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    catalog.add(CatalogRow("arm-1-x", "arm-1", hostile, hostile, "success", None, 10, 1, 100, time.time(), time.time(),
                           "0" * 64))
    catalog.close()
    server = PageServer(tmp_path / "catalog.sqlite")
    try:
        status, body, _ = get(server, "/")
        assert status == 200 and "<script" not in body and "<img" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    finally:
        server.stop()
