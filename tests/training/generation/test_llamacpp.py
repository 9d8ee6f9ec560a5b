"""The llama.cpp backend on tiny GPT-2 models: its GGUF files, the quality check, its rules."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.generation.tiny_models import GENERIC_TWEETS, write_records
from training.basemodels import BASES_DIR, build_tiny_model
from training.generation import (
    GenerationSettings,
    TweetGenerator,
    clear_generator_cache,
    llamacpp,
    llamacpp_build,
)
from training.generation.gguf_files import write_adapter, write_base

gguf = pytest.importorskip("gguf")

SHORT = GenerationSettings(max_length=40)
needs_engine = pytest.mark.skipif(
    not llamacpp.llamacpp_installed(), reason="llama-cpp-python is not installed"
)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    folder = build_tiny_model(GENERIC_TWEETS, tmp_path / "alice")
    write_records(folder, GENERIC_TWEETS)
    return folder


@pytest.fixture(scope="module")
def lora_training(tmp_path_factory: pytest.TempPathFactory, sample_table) -> tuple[Path, str]:
    """A trained LoRA model's folder (in its store) and the progress lines its training wrote."""
    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    store = ModelStore(tmp_path_factory.mktemp("llama-lora"))
    config = TrainConfig(
        base_model="tiny", lora=True, epochs=1, block_size=64, batch_size=8, max_steps=2
    )
    stream = io.StringIO()
    return train_model(sample_table, config, store, JsonProgress(stream)).path, stream.getvalue()


def _tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    reader = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape)) for t in reader.tensors}


def test_a_gpt2_base_is_written_in_q8_0_with_llama_cpp_names(tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    out = tiny_dir.parent / "base.gguf"
    write_base(model, tokenizer, tokenizer.eos_token_id, out, name="alice")
    tensors = _tensors(out)
    # Conv1D weights transposed to llama.cpp's [out, in] (GGUF lists ne0 first: in, out).
    assert tensors["blk.0.attn_qkv.weight"] == ("Q8_0", (128, 384))
    assert tensors["blk.1.ffn_up.weight"] == ("Q8_0", (128, 512))
    assert tensors["blk.0.attn_norm.bias"][0] == "F32"
    assert "output.weight" not in tensors  # tied: llama.cpp reuses the token embedding
    reader = gguf.GGUFReader(str(out))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == model.config.vocab_size


def test_a_lora_adapter_is_written_in_f16_beside_its_alpha(
    lora_training: tuple[Path, str], tmp_path: Path
) -> None:
    from transformers import GPT2Config

    folder, _ = lora_training
    out = tmp_path / "adapter.gguf"
    write_adapter(folder, GPT2Config(n_positions=512, n_embd=128, n_layer=2, n_head=4), out)
    tensors = _tensors(out)
    settings = json.loads((folder / "adapter_config.json").read_text())
    rank = settings["r"]
    assert tensors["blk.0.attn_qkv.weight.lora_a"] == ("F16", (128, rank))
    assert tensors["blk.0.attn_qkv.weight.lora_b"] == ("F16", (rank, 384))
    reader = gguf.GGUFReader(str(out))
    assert float(reader.fields["adapter.lora.alpha"].parts[-1][0]) == settings["lora_alpha"]


def test_an_adapter_llama_cpp_cannot_apply_exactly_is_refused(
    lora_training: tuple[Path, str], tmp_path: Path
) -> None:
    from transformers import GPT2Config

    from training.generation.gguf_files import GGUFUnsupported

    folder, _ = lora_training
    copy = tmp_path / "dora"
    copy.mkdir()
    settings = json.loads((folder / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**settings, "use_dora": True}))
    with pytest.raises(GGUFUnsupported, match="use_dora"):
        write_adapter(copy, GPT2Config(n_embd=128, n_layer=2, n_head=4), tmp_path / "x.gguf")


def test_the_base_file_is_made_once_by_concurrent_makers(tmp_path: Path) -> None:
    import threading

    made: list[Path] = []

    def make(path: Path) -> None:
        made.append(path)
        path.write_bytes(b"GGUF")

    paths: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: paths.append(llamacpp_build.base_file(tmp_path, "abc", make))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and {p.name for p in paths} == {"abc.gguf"}
    assert not [p for p in paths[0].parent.iterdir() if p.suffix == ".tmp"]


@needs_engine
def test_a_model_of_its_own_is_served_by_llama_cpp_after_the_check(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu", backend="llamacpp")
    assert generator.backend == "llamacpp"
    record = llamacpp_build.read_record(tiny_dir)
    assert record is not None and record["serves"] and record["kind"] == "full"
    assert abs(record["check"]["ppl_increase_pct"]) <= 1.0
    result = generator.generate(n=2, seed=3, settings=SHORT)
    assert result.candidates >= 1 and all(len(t) <= 280 for t in result.tweets)


@needs_engine
def test_seeded_calls_repeat_and_leave_global_randomness_alone(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu", backend="llamacpp")
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    states = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state())
    first = generator.generate(n=3, seed=11, settings=SHORT).tweets
    second = generator.generate(n=3, seed=11, settings=SHORT).tweets
    assert first == second
    assert random.getstate() == states[0] and np.random.get_state()[1].tolist() == states[1]
    assert torch.equal(torch.get_rng_state(), states[2])
    unseeded = {tuple(generator.generate(n=3, settings=SHORT).tweets) for _ in range(3)}
    assert len(unseeded) > 1


@needs_engine
def test_a_healed_prompt_keeps_its_word_and_rows_stop_at_the_length(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu", backend="llamacpp")
    result = generator.generate("coffee", n=3, seed=5, settings=GenerationSettings(max_chars=40))
    assert all(t.startswith("coffee") and len(t) <= 40 for t in result.tweets)


@needs_engine
def test_a_model_over_the_bound_is_served_by_the_next_path(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llamacpp_build, "_max_increase_pct", lambda: -100.0)
    generator = TweetGenerator.load(tiny_dir, device="cpu", backend="llamacpp")
    assert generator.backend == "torch"
    record = llamacpp_build.read_record(tiny_dir)
    assert record is not None and not record["serves"]
    assert "(llama.cpp: " in llamacpp_build.engine_line(tiny_dir)
    assert "over -100.0 %" in llamacpp_build.engine_line(tiny_dir)
    # The record is reused: the next load does not measure again.
    stamp = (tiny_dir / llamacpp.ENGINE_DIR / "source.json").stat().st_mtime_ns
    assert TweetGenerator.load(tiny_dir, device="cpu", backend="llamacpp").backend == "torch"
    assert (tiny_dir / llamacpp.ENGINE_DIR / "source.json").stat().st_mtime_ns == stamp


@needs_engine
def test_training_writes_the_adapter_into_the_model_folder_and_one_base_serves_all(
    lora_training: tuple[Path, str],
) -> None:
    folder, progress = lora_training
    assert "llama.cpp" in progress
    adapter = folder / llamacpp.ENGINE_DIR / llamacpp.ADAPTER_FILE
    assert adapter.is_file() and adapter.stat().st_size < 2_000_000
    record = llamacpp_build.read_record(folder)
    assert record is not None and record["kind"] == "lora" and record["serves"]
    bases = folder.parent / BASES_DIR / llamacpp.BASES_SUBDIR
    assert (bases / record["base"]).is_file()
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Generation on a CPU" in card and "llama.cpp serves it" in card
    assert llamacpp_build.engine_line(folder) == "llama.cpp"
    # The copy filter's digests too (saved when training measured the likeness table), so the
    # bot's first load of the handle does not digest its tweets.
    assert (folder / "copy_filter.npz").is_file()
    first = TweetGenerator.load(folder, device="cpu", backend="llamacpp")
    second = TweetGenerator.load(folder, device="cpu", backend="llamacpp")
    assert first.backend == second.backend == "llamacpp"
    assert first.shared_key == second.shared_key != ""
    assert llamacpp.loaded_models() == 1
    assert first.generate(n=2, seed=1, settings=SHORT).tweets == (
        second.generate(n=2, seed=1, settings=SHORT).tweets
    )
    first.close()
    second.close()
    assert llamacpp.loaded_models() == 0


@needs_engine
def test_auto_prefers_llama_cpp_on_a_cpu(tiny_dir: Path) -> None:
    assert TweetGenerator.load(tiny_dir, device="cpu").backend == "llamacpp"
    assert TweetGenerator.load(tiny_dir, device="cpu", backend="torch").backend == "torch"


def _sharp_base(kind: str, folder: Path) -> Path:
    """A random ``kind`` model with sharp attention and outputs (query, key and embedding weights
    scaled up), so a wrong rotary layout changes its perplexity; with its records, a servable
    model folder."""
    from transformers import AutoModelForCausalLM

    from tests.training.generation.tiny_models import random_base

    random_base(kind, folder, GENERIC_TWEETS)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(40)
            layer.self_attn.k_proj.weight.mul_(40)
        model.model.embed_tokens.weight.mul_(20)  # tied: sharp output distributions too
    model.save_pretrained(folder)
    write_records(folder, GENERIC_TWEETS)
    return folder


@needs_engine
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_llama_family_models_match_torch_in_llama_cpp(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _sharp_base(kind, tmp_path / kind)
    generator = TweetGenerator.load(folder, device="cpu", backend="llamacpp")
    record = llamacpp_build.read_record(folder)
    assert record is not None and record["serves"], record
    assert generator.backend == "llamacpp"
    assert generator.generate(n=2, seed=1, settings=SHORT).candidates >= 1
    if kind == "llama":
        # The check catches a wrong rotary layout: without llama.cpp's permutation it fails.
        from training.generation import gguf_files

        generator.close()
        clear_generator_cache()
        monkeypatch.setattr(gguf_files, "_permute", lambda rows, heads: rows)
        (folder / llamacpp.ENGINE_DIR / "source.json").unlink()
        assert TweetGenerator.load(folder, device="cpu", backend="llamacpp").backend == "torch"
        broken = llamacpp_build.read_record(folder)
        assert broken is not None and broken["check"]["ppl_increase_pct"] > 1.0


@needs_engine
def test_two_handles_on_one_base_generate_at_once_as_they_do_alone(
    lora_training: tuple[Path, str],
) -> None:
    folder, _ = lora_training
    first, second = _handles(folder, 2)  # each its own adapter, the same base file
    alone = [g.generate(n=4, seed=9, settings=SHORT).tweets for g in (first, second)]
    assert _at_once([first, second], n=4, seed=9) == alone
    first.close()
    second.close()


def _at_once(generators: list[TweetGenerator], *, n: int, seed: int) -> list[list[str] | None]:
    """Each generator's seeded tweets, all asked at the same moment from threads of their own
    (None for one that did not answer within two minutes)."""
    import threading

    start = threading.Barrier(len(generators), timeout=60)
    together: dict[int, list[str]] = {}

    def run(index: int, generator: TweetGenerator) -> None:
        start.wait()
        together[index] = generator.generate(n=n, seed=seed, settings=SHORT).tweets

    threads = [threading.Thread(target=run, args=(i, g)) for i, g in enumerate(generators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return [together.get(i) for i in range(len(generators))]


def test_the_cores_are_split_between_generations_never_oversubscribed() -> None:
    fair = llamacpp.fair_threads
    assert fair(2, 1, 2) == 2  # alone: every thread asked for
    assert fair(2, 2, 2) == 1 and fair(2, 5, 2) == 1  # two or more at once on two cores
    assert fair(2, 4, 16) == 2 and fair(4, 1, 2) == 2  # many cores; never more than the cores
    assert fair(3, 0, 8) == 3


@needs_engine
def test_a_generation_beside_another_uses_its_share_of_the_cores(
    lora_training: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = lora_training
    generator = TweetGenerator.load(folder, device="cpu", backend="llamacpp")
    assert generator.backend == "llamacpp"
    original, used = llamacpp._Context.decode, []

    def decode(context, tokens):
        original(context, tokens)
        used.append(context.threads)

    monkeypatch.setattr(llamacpp._Context, "decode", decode)
    monkeypatch.setattr(llamacpp, "_cores", lambda: 2)
    generator._backend.model.threads = 2
    with generator._backend.model.context():  # another handle on the same base is generating
        generator.generate(n=1, seed=3, settings=SHORT)
    assert used and set(used) == {1}
    used.clear()
    generator.generate(n=1, seed=3, settings=SHORT)  # alone again: both cores
    assert used and set(used) == {2}
    generator.close()


def _handles(folder: Path, count: int) -> list[TweetGenerator]:
    """``count`` handles on ``folder``'s base: copies of its folder, each with its own adapter."""
    import shutil

    generators = []
    for i in range(count):
        copy = folder.parent / f"{folder.name}-handle{i}"
        if not copy.exists():
            shutil.copytree(folder, copy)
        generators.append(TweetGenerator.load(copy, device="cpu", backend="llamacpp"))
    assert {g.backend for g in generators} == {"llamacpp"} and llamacpp.loaded_models() == 1
    return generators


@needs_engine
def test_a_handle_asked_again_keeps_its_context_and_a_new_one_takes_the_quietest(
    lora_training: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = lora_training
    first, second, third = _handles(folder, 3)
    sets: list[tuple[int, str]] = []  # (context, handle) each time a context changes adapter
    original = llamacpp._Context.use

    def use(context, adapter):
        if not llamacpp._same(context.adapter, adapter):
            names = {id(g._backend.adapter): g.name for g in (first, second, third)}
            sets.append((id(context), names.get(id(adapter), "bare")))
        original(context, adapter)

    monkeypatch.setattr(llamacpp._Context, "use", use)
    for generator in (first, second, first, second, first):
        generator.generate(n=1, seed=2, settings=SHORT)
    # Two contexts: each handle set its adapter once and found it there afterwards.
    assert len(sets) == 2 and len({context for context, _ in sets}) == 2
    contexts = {name: context for context, name in sets}
    third.generate(n=1, seed=2, settings=SHORT)
    # The third handle takes the context used least recently: the second handle's.
    assert sets[-1] == (contexts[second.name], third.name)
    for generator in (first, second, third):
        generator.close()


@needs_engine
def test_under_openmp_every_decode_runs_on_one_thread_with_every_core(
    lora_training: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import llama_cpp

    folder, _ = lora_training
    first, second = _handles(folder, 2)
    alone = [g.generate(n=2, seed=4, settings=SHORT).tweets for g in (first, second)]
    decoding, original = [], llama_cpp.llama_decode

    def decode(context, batch):
        decoding.append(threading.current_thread().name)
        return original(context, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", decode)
    monkeypatch.setattr(llamacpp, "uses_openmp", lambda: True)
    monkeypatch.setattr(llamacpp, "_cores", lambda: 2)
    threads_used: list[int] = []
    original_set = llama_cpp.llama_set_n_threads

    def set_threads(context, threads, batch_threads):
        threads_used.append(threads)
        return original_set(context, threads, batch_threads)

    monkeypatch.setattr(llama_cpp, "llama_set_n_threads", set_threads)
    for generator in (first, second):
        generator._backend.model.threads = 2
    assert _at_once([first, second], n=2, seed=4) == alone
    assert decoding and {name.split("_")[0] for name in decoding} == {"llamacpp-decode"}
    assert 1 not in threads_used  # decodes made one at a time: never a share of the cores
    for generator in (first, second):
        generator.close()
