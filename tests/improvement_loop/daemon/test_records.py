"""The daemon's records as the fleet page reads them: cycles, decisions, per-release rates, gate vs fleet."""
import pytest

from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.fleet.catalog import Catalog, CatalogRow


def _episode(catalog, i, version, robot, success, interventions=0, at=1000.0):
    catalog.add(CatalogRow(f"ep{i:04d}", robot, "push", version, "success" if success else "failure", None, 100,
                           interventions, 1, at + i, at + i, "0" * 64))


def test_cycle_lifecycle_and_decisions(tmp_path):
    conn = records.connect(tmp_path / "catalog.sqlite")
    c = records.new_cycle(conn, "hash", "m@1", tmp_path / "work")
    assert c.state == "snapshot" and c.status == records.RUNNING and c.work_dir.endswith(f"cycle-{c.id}")
    assert records.current_cycle(conn).id == c.id
    with pytest.raises(RuntimeError, match="already running"):
        records.new_cycle(conn, "hash", "m@1", tmp_path / "work")
    records.advance(conn, c.id, "snapshot", "value", snapshot={"episodes": ["a"], "high_water": 5.0, "new": 1})
    records.record_decision(conn, c.id, "gate", False, {"candidate": {"success_rate": 0.2}}, "worse")
    records.finish(conn, c.id, records.REFUSED, "worse")
    done = records.cycles(conn, 10)[0]
    assert (done.state, done.status, done.snapshot["episodes"]) == ("value", "refused", ["a"])
    assert set(done.times) == {"snapshot", "value"} and "finished" in done.times["value"]
    assert records.current_cycle(conn) is None
    [d] = records.decisions(conn, c.id)
    assert (d.kind, d.accepted, d.numbers["candidate"]["success_rate"]) == ("gate", False, 0.2)
    records.set_paused(conn, True)
    assert records.daemon_state(conn).paused


def test_fleet_summary_and_correlation(tmp_path):
    path = tmp_path / "catalog.sqlite"
    catalog, conn = Catalog(path), records.connect(path)
    rates = {"m@1": 0.2, "m@2": 0.5, "m@3": 0.9}
    i = 0
    for version, rate in rates.items():
        for k in range(10):
            _episode(catalog, i, version, "r1" if k % 2 else "r2", k < rate * 10, interventions=10 if k == 0 else 0)
            i += 1
    summary = records.fleet_summary(conn)
    assert summary["m@2"].overall.episodes == 10 and summary["m@2"].overall.success_rate == 0.5
    assert summary["m@1"].overall.intervention_rate == pytest.approx(10 / 1000)
    assert set(summary["m@3"].robots) == {"r1", "r2"}
    assert records.gate_vs_fleet(conn).r is None  # no gate decisions yet
    c = records.new_cycle(conn, "h", "", tmp_path)
    records.record_decision(conn, c.id, "gate", True, {"candidate": {"release": "m@2", "success_rate": 0.4},
                                                       "incumbent": {"release": "m@1", "success_rate": 0.1}}, "ok")
    assert records.gate_vs_fleet(conn).r is None  # two releases: too few
    records.record_decision(conn, c.id, "gate", True, {"candidate": {"release": "m@3", "success_rate": 0.8},
                                                       "incumbent": {"release": "m@2", "success_rate": 0.4}}, "ok")
    corr = records.gate_vs_fleet(conn)
    assert len(corr.points) == 3 and corr.r == pytest.approx(1.0, abs=0.02)
