"""benchmarks/runtime_latency.py --candidates: the engine figures of value-guided execution, in seconds."""
import importlib.util
import sys

from repo import ROOT


def test_engine_figures_for_k_candidates(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))          # it imports its neighbour cpu_load
    spec = importlib.util.spec_from_file_location("runtime_latency", ROOT / "benchmarks" / "runtime_latency.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    bundle = bench.reference_bundle(tmp_path / "guided", "a", 0, critic=True)
    figures = bench.bench_engine(bundle, 0.5, candidates=4)
    assert figures["candidates"] == 4 and figures["engine_calls"] >= 1
    assert 0 < figures["policy_engine_p50_ms"] <= figures["engine_p50_ms"]
    assert 0 < figures["critic_p50_ms"] <= figures["engine_p50_ms"]
    plain = bench.bench_engine(bench.reference_bundle(tmp_path / "plain", "b", 1), 0.5)
    assert plain["candidates"] == 1 and "critic_p50_ms" not in plain
