"""benchmarks/bench_data.py runs end to end in its fast mode and reports every source and reader it can run."""

import importlib.util
from pathlib import Path


BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data.py"


def test_fast_data_benchmark_measures_every_source_and_the_installed_readers():
    spec = importlib.util.spec_from_file_location("bench_data", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    results = bench.run(fast=True, workers=(0,))
    by_source = {row["source"]: row for row in results["pipeline"]}
    assert set(by_source) == {"folder", "parquet", "tar shards"}
    assert by_source["folder"]["clips"] == 2 and by_source["folder"]["clips_per_second"] > 0
    for source in ("parquet", "tar shards"):  # bytes rows run once load_video reads bytes
        assert ("error" in by_source[source]) == (not bench.reads_bytes())
    measured = {(row["reader"], row["gop"], row["plan"]) for row in results["decode"] if "seconds_per_clip" in row}
    assert {("ila_hf (path)", gop, plan) for gop in (250, 30) for plan in ("eval", "train")} <= measured
    table = bench.markdown(results)
    assert "| folder | 0 | 2 |" in table and "| ila_hf (path) | 250 | eval |" in table
