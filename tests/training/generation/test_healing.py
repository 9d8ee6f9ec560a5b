"""Clean openings: a healed prompt's last word, whole words kept whole, the person's words."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.generation.tiny_models import (
    FAST,
    one_torch_thread,
    overfit,
    write_records,
)
from training.basemodels import build_tiny_model
from training.generation import (
    TweetGenerator,
)

# Per test, because training in shared fixtures sets torch to every core again.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


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


def test_a_model_scans_its_vocabulary_once_per_healed_piece(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.generation import generator as generator_module
    from training.generation.sharing import token_texts

    generator = TweetGenerator.load(tiny_dir, device="cpu")
    scans: list[int] = []

    def counted(tokenizer):
        scans.append(1)
        return token_texts(tokenizer)

    monkeypatch.setattr(generator_module, "token_texts", counted)
    first = generator._healing("Tod")
    assert generator._healing("Tod") == first and first and len(scans) == 1
    generator._healing("Tod", whole_word=True)  # another question, another scan
    assert len(scans) == 2
    monkeypatch.setattr(generator_module, "_HEALINGS_KEPT", 2)
    generator._healing("I")  # a third answer: the oldest ("Tod", free) goes
    assert generator._healing("Tod") == first and len(scans) == 4


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
