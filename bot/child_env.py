"""What of the bot's environment its child processes (training, generation) get.

Settings are read case-blind (``discord_token`` is the Discord token as much as
``DISCORD_TOKEN``), so the secrets are found the same way: every variable that a ``SecretStr``
field of the settings would read, compared without case, is taken out, and so is every
``DOPPELTWEET_`` variable that is not a training setting. The names come from the settings
models, never from a list kept by hand.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import AliasChoices, SecretStr
from pydantic_settings import BaseSettings

from bot.config import BotSettings
from training.config import TrainingSettings

PREFIX = "DOPPELTWEET_"
#: The training settings' secrets the training process needs (the X API source, the Hub push).
TRAINING_SECRETS = ("x_bearer_token", "hf_token")
#: The one secret the generation process needs (a gated base model on the Hub).
GENERATION_SECRETS = ("hf_token",)


def env_names(settings_cls: type[BaseSettings], name: str) -> frozenset[str]:
    """Every variable (upper-cased) a field is read from: its aliases, else prefix + name."""
    field = settings_cls.model_fields[name]
    alias: Any = field.validation_alias
    if isinstance(alias, AliasChoices):
        return frozenset(str(a).upper() for a in alias.choices)
    if isinstance(alias, str):
        return frozenset({alias.upper()})
    return frozenset({f"{PREFIX}{name.upper()}"})


def _is_secret(field: Any) -> bool:
    return SecretStr in getattr(field.annotation, "__args__", (field.annotation,))


def secret_env_names(kept: Collection[str] = ()) -> frozenset[str]:
    """The variables (upper-cased) of every secret setting, bot's and training's, but ``kept``."""
    names: set[str] = set()
    for cls in (BotSettings, TrainingSettings):
        for name, field in cls.model_fields.items():
            if _is_secret(field) and name not in kept:
                names |= env_names(cls, name)
    return frozenset(names)


def training_env_names() -> frozenset[str]:
    """The variables (upper-cased) of the training settings that are not secrets."""
    names: set[str] = set()
    for name, field in TrainingSettings.model_fields.items():
        if not _is_secret(field):
            names |= env_names(TrainingSettings, name)
    return frozenset(names)


def child_environment(
    environ: Mapping[str, str], *, secrets_kept: Collection[str] = ()
) -> dict[str, str]:
    """``environ`` without the secrets (but the ``secrets_kept`` fields') and without the bot's
    own ``DOPPELTWEET_`` settings; names compared without case."""
    secrets = secret_env_names(secrets_kept)
    training = training_env_names() | {
        n for kept in secrets_kept for n in env_names(TrainingSettings, kept)
    }
    out: dict[str, str] = {}
    for key, value in environ.items():
        upper = key.upper()
        if upper in secrets:
            continue
        if upper.startswith(PREFIX) and upper not in training:
            continue
        out[key] = value
    return out
