"""The catalog: SQLite in WAL mode, one row per stored episode, repaired to agree with the store."""
import json
import os
import sqlite3

import pytest
from fleet_world import write_episode

from robot_runtime.episode import LABELS, EpisodeStore
from robot_runtime.fleet.protocol import content_sha256, describe_episode
from robot_runtime.improvement_loop.fleet.catalog import Catalog, repair, row_for


def test_rows_round_trip_in_wal_mode(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    path = write_episode(store, "r1-ep0", steps=45)
    catalog = Catalog(tmp_path / "catalog.sqlite")
    row = row_for(store.open("r1-ep0"), "r1", content_sha256(describe_episode(path)), 123.0)
    catalog.add(row)
    assert catalog.get("r1-ep0") == row and catalog.ids() == {"r1-ep0"}
    assert (row.steps, row.intervention_steps, row.labels, row.received_at) == (45, 9, None, 123.0)
    with pytest.raises(sqlite3.IntegrityError):
        catalog.add(row)  # one row per episode
    reader = sqlite3.connect(tmp_path / "catalog.sqlite")  # another process's view, while the writer is open
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reader.execute("SELECT robot, steps FROM episodes").fetchall() == [("r1", 45)]
    catalog.close()


def test_repair_makes_the_catalog_agree_with_the_store(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    catalog = Catalog(tmp_path / "catalog.sqlite")
    for i in range(3):
        write_episode(store, f"r1-ep{i}", seed=i)
    assert sorted(repair(catalog, store, {"r1-ep1": ("arm-7", 99.0)}).cataloged) == ["r1-ep0", "r1-ep1", "r1-ep2"]
    assert catalog.get("r1-ep1").robot == "arm-7" and catalog.get("r1-ep0").robot == "r1"  # who uploaded it
    os.rename(store.episodes_dir / "r1-ep2", tmp_path / "elsewhere")  # the row outlived its episode
    store.label("r1-ep0", "failure", note="late")  # a label the catalog missed
    damaged = write_episode(store, "r1-ep3", seed=3)
    (damaged / "zarr.json").write_text("{}")
    done = repair(catalog, store, {})
    assert done.removed == ["r1-ep2"] and done.relabeled == ["r1-ep0"] and list(done.quarantined) == ["r1-ep3"]
    assert catalog.ids() == set(store.episode_ids()) == {"r1-ep0", "r1-ep1"}
    assert catalog.get("r1-ep0").outcome == "failure"
    assert json.loads(catalog.get("r1-ep0").labels) == json.loads((store.episodes_dir / "r1-ep0" / LABELS).read_text())
    assert not repair(catalog, store, {})  # nothing left to do


def test_a_server_database_url_is_refused_with_what_it_needs(tmp_path):
    with pytest.raises(ValueError, match="only SQLite"):
        Catalog("postgresql://db.example/fleet")
