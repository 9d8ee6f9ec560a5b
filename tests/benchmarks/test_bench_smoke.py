"""Each benchmark script runs end to end in its minimal mode and prints the JSON keys we report.

Timings are never asserted: the machine is shared and the numbers are for the README, not a gate.
The scripts run in this process (imports paid once) on tiny shapes, sharing one scratch folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import (
    bench_generation,
    bench_generation_fast,
    bench_loop_lag,
    bench_matmul,
    bench_memory,
    bench_training,
    run_all,
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work folder (benchmark models built once) and an empty model store for .bases."""
    return tmp_path_factory.mktemp("bench")


def run_quick(main: Any, scratch: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = main(["--quick", "--workdir", str(scratch), "--models-dir", str(scratch / "models")])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_matmul_reports_the_machine_and_a_positive_rate(scratch, capsys) -> None:
    out = run_quick(bench_matmul.main, scratch, capsys)
    assert out["machine"]["cores"] >= 1
    assert out["matmul"]["median_gflops"] > 0


def test_training_compares_ours_with_naive_and_reports_mfu_for_full_and_lora(
    scratch, capsys
) -> None:
    out = run_quick(bench_training.main, scratch, capsys)["training"]
    assert out["ceiling_gflops"] > 0
    for name, rule in (("gpt2_full", 6), ("gpt2_lora", 4)):
        entry = out[name]
        assert entry["flops_per_token"] == rule * entry["n_matmul"]
        assert entry["ours"]["padding_share"] == 0.0
        assert 0 < entry["naive"]["padding_share"] < 1
        for key in ("mfu", "mfu_incl_attention", "speedup_vs_naive", "achieved_gflops"):
            assert entry[key] > 0
        assert 0 < entry["mfu_vs_best_ceiling"] <= entry["mfu"]
        assert entry["ours"]["tokens_per_s"] > 0 and entry["naive"]["tokens_per_s"] > 0
    # A default !train as the bot starts it, in a process of its own, under a time budget.
    default = out["default_train"]
    assert default["argv"][-2:] == ["--time-budget", str(bench_training.QUICK_BUDGET_S)]
    assert "--epochs" not in default["argv"] and "--max-steps" not in default["argv"]
    assert default["time_budget_s"] == bench_training.QUICK_BUDGET_S
    assert default["wall_s"] > 0 and 0 < default["steps"] <= default["cap_steps"]
    assert default["tweet_ppl_after"] < default["tweet_ppl_before"]
    assert default["tweets_kept"] > 0 and "reference_tweet_ppl" not in default


def test_generation_reports_cold_and_warm_latency_per_model(scratch, capsys) -> None:
    out = run_quick(bench_generation.main, scratch, capsys)["generation"]
    for model in ("tiny", "gpt2"):
        entry = out[model]
        # The top level is the served path; torch (and any other engine) beside it.
        assert entry["backend"] in {"llamacpp", "ctranslate2", "torch"}
        assert entry["warm_calls"] == 3 and entry["cold_s"] > 0
        assert entry["warm_p50_s"] <= entry["warm_p95_s"]
        assert entry["candidates_per_call"] >= 1
        torch_entry = entry if entry["backend"] == "torch" else entry["torch"]
        assert torch_entry["backend"] == "torch"
        assert torch_entry["warm_p50_s"] <= torch_entry["warm_p95_s"] <= torch_entry["warm_max_s"]
        assert torch_entry["sampled_tokens_per_s"] > 0 and torch_entry["ms_per_forward_pass"] > 0
    many = out["many_handles"]
    assert many["handles"] == many["requests"] == 5
    assert many["p50_s"] <= many["p95_s"]
    # llama.cpp adapters are bounded by memory, other engines' handles by the count (4).
    assert many["handles_loaded"] == (5 if many["backends"] == ["llamacpp"] else 4)
    assert isinstance(many["rss_per_handle_mb"], float)
    assert out["pool"]["calls"] == 5 and out["pool"]["p50_ms"] <= out["pool"]["p95_ms"]
    assert out["concurrent8"]["requests"] == 8
    assert out["concurrent8"]["models"] == [f"g_lora-h{i:03d}" for i in range(8)]


def test_memory_reports_full_weights_against_extra_lora_handles(scratch, capsys) -> None:
    out = run_quick(bench_memory.main, scratch, capsys)["memory"]
    assert out["full_model"]["lora"] is False
    assert out["first_lora_handle_incl_base"]["lora"] is True
    assert len(out["extra_lora_handles"]) == bench_memory.EXTRA_HANDLES
    assert isinstance(out["per_extra_lora_handle_mb"], float)
    extra, full = out["extra_lora_handles"][0], out["full_model"]
    assert extra["cache_accounted_mb"] < full["cache_accounted_mb"]
    assert set(out["parts_of_a_handle_mb"]) == {
        "tokenizer_unshared",
        "copy_filter",
        "copy_filter_tweets",
    }
    assert out["tokenizers_shared"] is True
    engines = {h["backend"] for h in out["fast_handles"]}
    assert len(out["fast_handles"]) == 3 and len(engines) == 1
    assert engines <= {"llamacpp", "ctranslate2"}
    assert all(h["cache_accounted_mb"] > 0 for h in out["fast_handles"])
    assert isinstance(out["fast_per_handle_mb"], float)


def test_loop_lag_samples_the_loop_during_a_real_training_job_and_generations(
    scratch, capsys
) -> None:
    out = run_quick(bench_loop_lag.main, scratch, capsys)["loop_lag"]
    training = out["during_training"]
    assert training["job"] == "succeeded"
    assert training["training_steps"] == 3
    assert out["first_load"]["where"] == "worker process"
    assert out["first_load_in_threads"]["where"] == "threads"
    scenarios = (
        training,
        out["during_generation"],
        out["first_load"],
        out["first_load_in_threads"],
    )
    for scenario in scenarios:
        assert scenario["samples"] > 0
        assert 0 <= scenario["p50_ms"] <= scenario["p99_ms"] <= scenario["max_ms"]


def test_lag_summary_uses_nearest_rank_percentiles() -> None:
    stats = bench_loop_lag.summarize([float(x) for x in range(1, 101)])
    assert stats == {"samples": 100, "p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}


def test_run_all_merges_script_output_and_names_missing_required_keys(tmp_path) -> None:
    output = tmp_path / "latest.json"
    code = run_all.main(["--quick", "--only", "bench_matmul", "--output", str(output)])
    data = json.loads(output.read_text())
    assert code == 0
    assert data["matmul"]["median_gflops"] > 0 and data["machine"]["cores"] >= 1
    assert data["run"]["quick"] is True and data["run"]["missing_keys"] == []
    with pytest.raises(KeyError):
        run_all.lookup(data, "training.gpt2_full.mfu")


def test_fast_generation_compares_both_backends_and_their_perplexity(scratch, capsys) -> None:
    out = run_quick(bench_generation_fast.main, scratch, capsys)["generation"]["fast_vs_torch"]
    for case in ("torch.prompt", "ctranslate2.prompt", "torch.no_prompt", "ctranslate2.no_prompt"):
        assert out[case]["p50_s"] <= out[case]["p95_s"]
    assert out["warm_p50_s"] == out["ctranslate2.prompt"]["p50_s"]
    assert out["torch_fp32_ppl"] > 1 and out["fast_ppl"] > 1
    assert out["scored_tokens"] > 0
    types = out["compute_types"]
    assert {"auto", "int8", "float32"} <= set(types)
    assert out["fast_quantization"] == out["setting_default"] == "auto"
    assert types["auto"]["chosen"] in {"int8", "float32"}
    assert types["auto"]["check"]["bound_pct"] == out["ppl_bound_pct"]
    # float32 is exact: the check that both backends score the same tokens the same way.
    assert abs(types["float32"]["ppl_delta_pct"]) < 0.1
    for stats in types.values():
        assert stats["warm_p50_s"] > 0 and stats["batch5_s"] > 0 and stats["artifact_mb"] > 0
    assert out["chosen_default"] in {None, *types}


def test_the_default_rule_takes_the_fastest_type_within_the_bound() -> None:
    types = {
        "int8": {"ppl_delta_pct": 4.0, "warm_p50_s": 0.5},
        "float32": {"ppl_delta_pct": 0.0, "warm_p50_s": 1.0},
        "int16": {"ppl_delta_pct": 2.0, "warm_p50_s": 0.8},
    }
    assert bench_generation_fast.choose_quantization(types, torch_p50_s=2.0) == "int16"
    assert bench_generation_fast.choose_quantization(types, torch_p50_s=0.9) == "int16"
    assert bench_generation_fast.choose_quantization(types, torch_p50_s=0.7) is None


def test_run_all_merges_scripts_that_share_a_key_without_losing_either() -> None:
    merged = {"generation": {"gpt2": {"warm_p50_s": 9.0}, "fast_vs_torch": {"warm_p50_s": 1.0}}}
    run_all._replace(merged, "generation", {"generation": {"gpt2": {"warm_p50_s": 2.0}}})
    assert merged["generation"] == {
        "gpt2": {"warm_p50_s": 2.0},
        "fast_vs_torch": {"warm_p50_s": 1.0},
    }
    run_all._replace(
        merged, "generation.fast_vs_torch", run_all.nest("generation.fast_vs_torch", {"error": "x"})
    )
    assert merged["generation"]["fast_vs_torch"] == {"error": "x"}
    assert merged["generation"]["gpt2"] == {"warm_p50_s": 2.0}
