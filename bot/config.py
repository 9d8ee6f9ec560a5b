"""The bot's configuration, from the environment or a ``.env`` file (pydantic-settings).

The settings come in sections, one small class each, and :class:`BotSettings` is all of them
together; every section reads the same ``DOPPELTWEET_`` variables it would read alone.
Every field carries a description because ``docs/configuration.md`` is generated from them
(:mod:`bot.config_docs`), section by section. Secrets are the fields typed ``SecretStr``: they
never appear in a repr, a log line or a traceback, and :func:`secret_env_names` finds them.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from training.errors import InputError

_MB = 1024 * 1024
PREFIX = "DOPPELTWEET_"


class SettingsSection(BaseSettings):
    """One section of the bot's settings (prefix ``DOPPELTWEET_`` unless noted)."""

    #: The section's heading in the configuration docs.
    SECTION: ClassVar[str] = ""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", extra="ignore", populate_by_name=True
    )


class DiscordSettings(SettingsSection):
    """The Discord connection and who may command the bot."""

    SECTION: ClassVar[str] = "Discord"

    discord_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DISCORD_TOKEN", "DOPPELTWEET_DISCORD_TOKEN"),
        description="The bot token from the Discord developer portal (required to run the bot).",
    )
    owner_ids: Annotated[frozenset[int], NoDecode] = Field(
        default=frozenset(),
        description="Comma-separated Discord user ids allowed to run owner and admin commands "
        "in every server (e.g. `1234,5678`).",
    )
    prefix: str = Field(
        default="!", min_length=1, max_length=5, description="Prefix of the text commands."
    )
    discord_api_base: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DISCORD_API_BASE", "DOPPELTWEET_DISCORD_API_BASE"),
        description="Override of Discord's REST base URL, for Discord-compatible servers.",
    )
    discord_gateway_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DISCORD_GATEWAY_URL", "DOPPELTWEET_DISCORD_GATEWAY_URL"),
        description="Override of Discord's gateway URL, for Discord-compatible servers.",
    )

    @field_validator("owner_ids", mode="before")
    @classmethod
    def _split_owner_ids(cls, value: Any) -> Any:
        """Accept ``"1, 2"`` from the environment as well as a real collection."""
        if isinstance(value, int):
            return frozenset({value})
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            bad = [p for p in parts if not p.isdigit()]
            if bad:
                raise ValueError(f"owner ids are Discord user ids (digits), not {bad[0]!r}")
            return frozenset(int(p) for p in parts)
        return value

    def token(self) -> str:
        """The Discord token, or a one-sentence error saying how to set it."""
        if self.discord_token is None or not self.discord_token.get_secret_value().strip():
            raise InputError(
                "Set DISCORD_TOKEN (in the environment or .env) to the bot token from the "
                "Discord developer portal."
            )
        return self.discord_token.get_secret_value().strip()


class StorageSettings(SettingsSection):
    """Where the bot keeps its state, and how much one ``!train`` may bring in."""

    SECTION: ClassVar[str] = "Storage and input limits"

    data_dir: Path = Field(
        default=Path("data"),
        description="Where the bot keeps its state: the database, uploads and each server's "
        "models under `guilds/<server id>/`.",
    )
    db_path: Path | None = Field(
        default=None,
        description="The SQLite database file (default: `<data dir>/doppeltweet.db`).",
    )
    max_attachment_mb: float = Field(
        default=10,
        gt=0,
        description="Largest attachment `!train` accepts, checked before downloading "
        "(Discord's normal upload limit is 10 MB).",
    )
    max_upload_total_mb: float = Field(
        default=50,
        gt=0,
        description="Largest total size of the files one `!train` attaches, checked before "
        "downloading.",
    )
    train_me_max_messages: int = Field(
        default=3000,
        ge=1,
        le=100_000,
        description="Most of a member's own messages `!train me` collects from this server.",
    )
    train_me_max_age_days: int = Field(
        default=365,
        ge=1,
        description="How many days back `!train me` reads a member's messages.",
    )

    @property
    def db_file(self) -> Path:
        """The SQLite database file: ``db_path`` or ``<data dir>/doppeltweet.db``."""
        return self.db_path if self.db_path is not None else self.data_dir / "doppeltweet.db"

    @property
    def max_attachment_bytes(self) -> int:
        """``max_attachment_mb`` in bytes, to compare with ``Attachment.size``."""
        return int(self.max_attachment_mb * _MB)

    def guild_dir(self, guild_id: int) -> Path:
        """The folder of one server; the id is checked so nothing else can become a path."""
        if isinstance(guild_id, bool) or not isinstance(guild_id, int) or guild_id <= 0:
            raise InputError(f"{guild_id!r} is not a Discord server id.")
        return self.data_dir / "guilds" / str(guild_id)

    def guild_models_dir(self, guild_id: int) -> Path:
        """The model store of one server: a server only ever sees the models trained in it."""
        return self.guild_dir(guild_id) / "models"

    def guild_uploads_dir(self, guild_id: int) -> Path:
        """Where the attachments a server trained from are kept (``!retrain`` reuses them)."""
        return self.guild_dir(guild_id) / "uploads"


class TrainingJobSettings(SettingsSection):
    """How ``!train`` trains: the queue, the base model and the length of a training."""

    SECTION: ClassVar[str] = "Training jobs (`!train`)"

    max_concurrent_jobs: int = Field(
        default=1, ge=1, le=16, description="Training processes that may run at the same time."
    )
    max_queued_jobs_per_user: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Training jobs one user may have queued or running at once.",
    )
    progress_edit_interval_s: float = Field(
        default=5,
        ge=1,
        description="Least seconds between two edits of a training job's status message.",
    )
    cancel_grace_s: float = Field(
        default=10,
        gt=0,
        description="Seconds a cancelled or stopped training process gets to exit before it is "
        "killed.",
    )
    # SmolLM2 + LoRA: offline (no Hub needed, unlike `gpt2`), and better per minute of CPU than
    # huggingtweets' full GPT-2 fine-tune (docs/training.md, *Choosing the recipe*).
    base_model: str = Field(
        default="smollm2-135m",
        min_length=1,
        description="Base model `!train` fine-tunes: a Hugging Face id (`gpt2` is huggingtweets' "
        "original), a folder, `smollm2-135m` (built in, offline) or `tiny`.",
    )
    base_by_language: Annotated[dict[str, str], NoDecode] = Field(
        default={},
        description="Bases per language as JSON, e.g. "
        '`{"ja": "Qwen/Qwen2.5-0.5B", "zh": "Qwen/Qwen2.5-0.5B"}`: a `!train` whose cleaned '
        "tweets are mostly in a listed language (ISO 639-1 code, measured by the training "
        "process) trains on that base instead of `DOPPELTWEET_BASE_MODEL` (docs/training.md, "
        "*Other languages*).",
    )
    lora: bool = Field(
        default=True,
        description="Train LoRA adapters (every linear layer) instead of every weight.",
    )
    train_max_steps: int | None = Field(
        default=None,
        ge=1,
        description="Cap on optimizer steps per training, trained instead of the time budget "
        "(unset: no cap).",
    )
    train_epochs: int | None = Field(
        default=None,
        ge=1,
        description="Epochs per training, trained instead of the time budget (unset: "
        "`DOPPELTWEET_TRAIN_BUDGET_S`, at most 4 epochs as in huggingtweets).",
    )

    @field_validator("base_by_language", mode="before")
    @classmethod
    def _language_bases(cls, value: Any) -> dict[str, str]:
        """JSON from the environment, or a mapping; checked as the training CLI checks it."""
        from training.basemodels import parse_base_by_language

        try:
            return parse_base_by_language(value if isinstance(value, str) else json.dumps(value))
        except (InputError, TypeError) as error:
            raise ValueError(str(error)) from error


class TweetingSettings(SettingsSection):
    """How ``!tweet`` and auto-posts generate: the loaded models, the pool, a remote server."""

    SECTION: ClassVar[str] = "Tweeting (`!tweet` and auto-posts)"

    tweet_cooldown_s: float = Field(
        default=10, ge=0, description="Seconds a user waits between two `!tweet` commands."
    )
    tweet_pool_size: int = Field(
        default=5,
        ge=0,
        le=50,
        description="Ready prompt-less tweets kept per loaded model for instant !tweet and "
        "auto-posts (0: off); refilled in the background when no request waits.",
    )

    cache_max_models: int = Field(
        default=4, ge=1, description="Most models kept loaded in memory for `!tweet`."
    )
    cache_max_mb: float = Field(
        default=4096, gt=0, description="Most memory (MB) the loaded models may take together."
    )
    cache_fast_models: int = Field(
        default=2,
        ge=0,
        description=(
            "Most LoRA models kept on the fast backend, each its own merged CTranslate2 model; "
            "further LoRA models are served as adapters on their shared base (sizes: "
            "benchmarks/README.md)."
        ),
    )
    generation_process: bool = Field(
        default=True,
        description="Load and run `!tweet` models in a worker process, so a model's first load "
        "never stalls the bot (off: in the bot's own threads).",
    )
    generation_url: str | None = Field(
        default=None,
        description="Base URL of a `doppeltweet serve` (or other OpenAI-compatible) completions "
        "server, e.g. `http://ray-head:8000`: set, `!tweet` generates there; unset, in the bot.",
    )
    generation_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the generation server: `doppeltweet serve` requires it "
        "(and refuses to listen beyond loopback without it), the bot sends it.",
    )
    generation_timeout_s: float = Field(
        default=120,
        gt=0,
        description="Seconds the bot waits for one answer of the generation server.",
    )

    @property
    def cache_max_bytes(self) -> int:
        """``cache_max_mb`` in bytes, for the model cache."""
        return int(self.cache_max_mb * _MB)


class PostingSettings(SettingsSection):
    """Auto-post schedules and the accounts on other networks they post to."""

    SECTION: ClassVar[str] = "Auto-posting to X, Bluesky and Mastodon"

    timezone: str = Field(
        default="UTC",
        description="IANA time zone of auto-post schedules given as a time of day "
        "(e.g. `Europe/Berlin`).",
    )
    public_mentions: Literal["neutralise", "skip"] = Field(
        default="neutralise",
        description="What a post to X, Bluesky or Mastodon does with generated @mentions of real "
        "accounts: `neutralise` keeps the text but makes each @mention plain (no link, no "
        "notification); `skip` posts such a tweet only in the Discord channel.",
    )
    x_consumer_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("X_CONSUMER_KEY", "DOPPELTWEET_X_CONSUMER_KEY"),
        description="X API consumer (app) key, only for auto-posting to X.",
    )
    x_consumer_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("X_CONSUMER_SECRET", "DOPPELTWEET_X_CONSUMER_SECRET"),
        description="X API consumer (app) secret, only for auto-posting to X.",
    )
    x_access_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("X_ACCESS_TOKEN", "DOPPELTWEET_X_ACCESS_TOKEN"),
        description="X user-context access token of the posting account, only for auto-posting.",
    )
    x_access_token_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("X_ACCESS_TOKEN_SECRET", "DOPPELTWEET_X_ACCESS_TOKEN_SECRET"),
        description="X user-context access token secret of the posting account, only for "
        "auto-posting.",
    )
    bluesky_handle: str | None = Field(
        default=None,
        validation_alias=AliasChoices("BLUESKY_HANDLE", "DOPPELTWEET_BLUESKY_HANDLE"),
        description="Handle of the Bluesky account auto-posts go to (e.g. `bot.bsky.social`), "
        "only for `--to-bluesky`.",
    )
    bluesky_app_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("BLUESKY_APP_PASSWORD", "DOPPELTWEET_BLUESKY_APP_PASSWORD"),
        description="An app password of that Bluesky account (Settings → Privacy and security → "
        "App passwords), only for `--to-bluesky`.",
    )
    bluesky_service: str = Field(
        default="https://bsky.social",
        validation_alias=AliasChoices("BLUESKY_SERVICE", "DOPPELTWEET_BLUESKY_SERVICE"),
        description="Where the Bluesky account logs in and posts: `https://bsky.social` for "
        "accounts Bluesky hosts, else the address of its own PDS.",
    )
    mastodon_instance: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MASTODON_INSTANCE", "DOPPELTWEET_MASTODON_INSTANCE"),
        description="The Mastodon server of the posting account (e.g. `mastodon.social`), only "
        "for `--to-mastodon`.",
    )
    mastodon_access_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MASTODON_ACCESS_TOKEN", "DOPPELTWEET_MASTODON_ACCESS_TOKEN"),
        description="Access token of the posting Mastodon account with the `write:statuses` "
        "scope, only for `--to-mastodon`.",
    )
    mastodon_visibility: Literal["public", "unlisted"] = Field(
        default="public",
        description="Visibility of auto-posts on Mastodon: `public`, or `unlisted` (kept out of "
        "the public timelines).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Berlin") from error
        return value

    @property
    def x_posting_configured(self) -> bool:
        """Whether all four user-context X credentials are set (auto-posting to X is possible)."""
        secrets = (
            self.x_consumer_key,
            self.x_consumer_secret,
            self.x_access_token,
            self.x_access_token_secret,
        )
        return all(s is not None and s.get_secret_value() for s in secrets)

    @property
    def bluesky_posting_configured(self) -> bool:
        """Whether a Bluesky handle and app password are set."""
        password = self.bluesky_app_password
        return bool(
            self.bluesky_handle
            and self.bluesky_handle.strip()
            and password is not None
            and password.get_secret_value().strip()
        )

    @property
    def mastodon_posting_configured(self) -> bool:
        """Whether a Mastodon server and access token are set."""
        token = self.mastodon_access_token
        return bool(
            self.mastodon_instance
            and self.mastodon_instance.strip()
            and token is not None
            and token.get_secret_value().strip()
        )


class RayJobSettings(SettingsSection):
    """Trainings as Ray Jobs on a cluster instead of local processes."""

    SECTION: ClassVar[str] = "Ray Jobs (training on a cluster)"

    ray_address: str | None = Field(
        default=None,
        description="Jobs API address of a Ray cluster's head (e.g. `http://ray-head:8265`): "
        "set, each training runs there as a Ray Job; unset, as a local process "
        "(docs/deployment.md).",
    )
    ray_python: str = Field(
        default="python",
        min_length=1,
        description="The Python interpreter on the Ray workers that runs `-m training train` "
        "(it must have doppeltweet installed; unset, a head on this machine uses the bot's own "
        "interpreter).",
    )
    ray_num_cpus: float = Field(
        default=1, ge=0, description="CPUs each training's Ray Job reserves (entrypoint_num_cpus)."
    )
    ray_num_gpus: float = Field(
        default=0,
        ge=0,
        description="GPUs each training's Ray Job reserves (entrypoint_num_gpus; 1 puts it on a "
        "GPU worker).",
    )
    ray_memory_mb: float | None = Field(
        default=None,
        gt=0,
        description="Memory (MB) each training's Ray Job reserves (entrypoint_memory; unset: "
        "none reserved).",
    )
    ray_retry_s: float = Field(
        default=30,
        ge=1,
        description="Seconds between two tries to reach an unreachable Ray head (queued jobs "
        "wait meanwhile).",
    )


class ServeSettings(SettingsSection):
    """The Ray Serve generation app of ``doppeltweet serve``."""

    SECTION: ClassVar[str] = "Serving (`doppeltweet serve`)"

    serve_host: str = Field(
        default="127.0.0.1",
        description="Address `doppeltweet serve` listens on (`0.0.0.0` to serve other machines).",
    )
    serve_port: int = Field(
        default=8000, ge=1, le=65535, description="Port `doppeltweet serve` listens on."
    )
    serve_ray_address: str = Field(
        default="auto",
        description="The Ray cluster `doppeltweet serve` joins (`auto`: the one on this machine; "
        "or `ray://head:10001`, or `local` to start one).",
    )
    serve_replicas: int = Field(
        default=1, ge=1, le=256, description="Replicas of the generation deployment."
    )
    serve_num_cpus: float = Field(
        default=1, ge=0, description="CPUs each generation replica reserves."
    )
    serve_num_gpus: float = Field(
        default=0, ge=0, description="GPUs each generation replica reserves."
    )
    serve_models_per_replica: int = Field(
        default=4,
        ge=1,
        le=1000,
        description=(
            "Models one generation replica keeps loaded (least recently used dropped); on "
            "llama.cpp each LoRA model is an adapter on one shared base, so hundreds fit."
        ),
    )


# pydantic collects the fields of the last base first: the bases are listed last section first so
# that the fields (a repr, a dump) come in the order of SECTIONS.
class BotSettings(
    ServeSettings,
    RayJobSettings,
    PostingSettings,
    TweetingSettings,
    TrainingJobSettings,
    StorageSettings,
    DiscordSettings,
):
    """Configuration of the Discord service (prefix ``DOPPELTWEET_`` unless noted)."""

    SECTION: ClassVar[str] = "The bot"


#: The sections of :class:`BotSettings`, in the order the docs show them.
SECTIONS: tuple[type[SettingsSection], ...] = (
    DiscordSettings,
    StorageSettings,
    TrainingJobSettings,
    TweetingSettings,
    PostingSettings,
    RayJobSettings,
    ServeSettings,
)


def is_secret(field: FieldInfo) -> bool:
    """Whether a setting is a secret: a field typed ``SecretStr`` (optional or not)."""
    return SecretStr in getattr(field.annotation, "__args__", (field.annotation,))


def env_names(settings_cls: type[BaseSettings], name: str) -> frozenset[str]:
    """Every variable (upper-cased) a field is read from: its aliases, else prefix + name."""
    alias: Any = settings_cls.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return frozenset(str(a).upper() for a in alias.choices)
    if isinstance(alias, str):
        return frozenset({alias.upper()})
    return frozenset({f"{PREFIX}{name.upper()}"})


def secret_env_names(
    settings_classes: Iterable[type[BaseSettings]], kept: Collection[str] = ()
) -> frozenset[str]:
    """The variables (upper-cased) of every secret field of ``settings_classes``, but the
    ``kept`` fields'. Settings are read without regard to case, so compare names upper-cased."""
    return frozenset(
        env
        for cls in settings_classes
        for name, field in cls.model_fields.items()
        if is_secret(field) and name not in kept
        for env in env_names(cls, name)
    )
