"""Settings shared by the CLI and the bot, from the environment or a ``.env`` file.

Secrets are ``SecretStr`` so they never show up in a repr, a log line or a traceback.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    """Configuration of the training library (prefix ``DOPPELTWEET_`` unless noted)."""

    model_config = SettingsConfigDict(
        env_prefix="DOPPELTWEET_", env_file=".env", extra="ignore", populate_by_name=True
    )

    models_dir: Path = Field(
        default=Path("models"),
        description="The CLI's model store (the bot keeps each server's models in its data dir).",
    )
    max_file_mb: float = Field(
        default=2048, gt=0, description="Largest input file (archive zip, .js, CSV, JSONL) read."
    )
    max_uncompressed_mb: float = Field(
        default=1024, gt=0, description="Largest total size of the tweet files inside an archive."
    )
    x_bearer_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("X_BEARER_TOKEN", "DOPPELTWEET_X_BEARER_TOKEN"),
        description="X API v2 app bearer token (pay-per-use; reads cost $0.005 a post).",
    )
    bluesky_api_base: str = Field(
        default="https://public.api.bsky.app",
        description="Bluesky AppView base URL (public, no login).",
    )
    hf_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HF_TOKEN", "DOPPELTWEET_HF_TOKEN"),
        description="Hugging Face token, only for --push-to-hub.",
    )
    max_tweets: int = Field(
        default=1_000_000,
        gt=0,
        description="Most posts read from one input (archive, file or feed); more is refused.",
    )
    bluesky_max_response_mb: float = Field(
        default=16, gt=0, description="Largest Bluesky response (one feed page) read."
    )
    bluesky_deadline_s: float = Field(
        default=600,
        gt=0,
        description="Most seconds one Bluesky fetch (every page of a feed) may take.",
    )
    mastodon_api_base: str | None = Field(
        default=None,
        description=(
            "Mastodon API base URL for every Mastodon handle (unset: https://<the handle's "
            "server>, public, no login)."
        ),
    )
    mastodon_max_response_mb: float = Field(
        default=16, gt=0, description="Largest Mastodon response (one page of posts) read."
    )
    mastodon_deadline_s: float = Field(
        default=600,
        gt=0,
        description="Most seconds one Mastodon fetch (the lookup and every page) may take.",
    )
    allow_private_servers: bool = Field(
        default=False,
        description=(
            "Let the Mastodon and Bluesky sources reach servers on loopback, private, "
            "link-local and other non-public addresses (only for tests and private deployments: "
            "on, any member can make the bot read the bot's own network)."
        ),
    )
    train_budget_s: float = Field(
        default=300,
        ge=0,
        description=(
            "Wall-clock seconds a training takes from start to saved model when neither epochs "
            "nor a step cap are asked for: the steps that fit are measured on the first ones, "
            "at most 4 epochs (0: no budget, every epoch is trained)."
        ),
    )
    generation_backend: Literal["auto", "torch", "ctranslate2", "llamacpp"] = Field(
        default="auto",
        description=(
            "What samples tweets: auto (on a CPU llama.cpp when installed and the model passes "
            "its check, else CTranslate2 when installed, else torch; torch on a GPU), torch, "
            "ctranslate2 or llamacpp (each falls back to torch for a model it cannot serve)."
        ),
    )
    llamacpp_max_ppl_increase_pct: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description=(
            "How far, in percent either way, llama.cpp's validation perplexity (Q8_0 base, LoRA "
            "applied at run time) may be from torch float32's for it to serve a model."
        ),
    )
    fast_quantization: Literal["auto", "int8", "int8_float32", "int16", "float32"] = Field(
        default="auto",
        description=(
            "Weight type of the CTranslate2 fast path: auto (int8 after SmoothQuant-style "
            "scaling when it measures within DOPPELTWEET_FAST_MAX_PPL_INCREASE_PCT of float32 "
            "on the model's validation tweets, else float32), float32 (exact), int8 or "
            "int8_float32 (unchecked: +3 to +19 % perplexity), int16 (Intel CPUs only); an "
            "artifact made with another type is made again."
        ),
    )
    fast_max_ppl_increase_pct: float = Field(
        default=3.0,
        ge=0,
        le=100,
        description=(
            "With DOPPELTWEET_FAST_QUANTIZATION=auto: the most validation perplexity int8 may "
            "add over float32, in percent, to be chosen."
        ),
    )
    generation_threads: int = Field(
        default=0,
        ge=0,
        le=64,
        description=(
            "CPU threads one CTranslate2 generation uses; 0: 1 for an int8 model, 2 for a "
            "float32 one (the fastest on 2 cores for each)."
        ),
    )


@lru_cache(maxsize=1)
def get_settings() -> TrainingSettings:
    """The process-wide settings (read once)."""
    return TrainingSettings()
