"""docs/configuration.md and the README's settings tables, generated from the settings models.

``python -m bot.config_docs > docs/configuration.md`` regenerates the docs; the bot's settings
are shown section by section (:data:`bot.config.SECTIONS`), the training settings in one table.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from bot.child_env import GENERATION_SECRETS, TRAINING_SECRETS
from bot.config import PREFIX, SECTIONS, BotSettings, is_secret
from training.config import TrainingSettings


def _shown_env(name: str, field: Any) -> str:
    """The variable the docs name for a field: its first alias, else prefix + name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{PREFIX}{name.upper()}"


def _default_text(field: Any) -> str:
    default = field.default
    if default is None:
        return "unset"
    if isinstance(default, dict) and not default:
        return "none"
    if isinstance(default, frozenset):
        return "none" if not default else ", ".join(str(x) for x in sorted(default))
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def config_table(settings_cls: type[BaseSettings]) -> str:
    """The Markdown table of a settings class's fields (variable, default, meaning)."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in settings_cls.model_fields.items():
        default = _default_text(field)
        shown = f"`{default}`" if default not in ("unset", "none") else default
        lines.append(f"| `{_shown_env(name, field)}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"


def bot_tables(level: int = 3) -> str:
    """Each section of the bot's settings: a heading of ``level`` (3: ``###``), then its table."""
    if not 1 <= level <= 6:
        raise ValueError(f"a Markdown heading level is 1 to 6, not {level}")
    return "\n".join(
        f"{'#' * level} {section.SECTION}\n\n{config_table(section)}" for section in SECTIONS
    )


def _names(settings_cls: type[BaseSettings], fields: Iterable[str]) -> str:
    """The docs' variables of ``fields`` as inline code, joined into a phrase."""
    shown = [f"`{_shown_env(name, settings_cls.model_fields[name])}`" for name in fields]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _secrets(settings_cls: type[BaseSettings]) -> list[str]:
    return [name for name, field in settings_cls.model_fields.items() if is_secret(field)]


_MINIMAL_ENV = """A minimal `.env`:

```sh
DISCORD_TOKEN=your-bot-token
DOPPELTWEET_OWNER_IDS=123456789012345678
DOPPELTWEET_DATA_DIR=/data
```

Everything the bot keeps lives under the data folder: the SQLite database `doppeltweet.db` (WAL
mode, so also `doppeltweet.db-wal` and `-shm`), and for each server `guilds/<server id>/uploads/`
(the attachments it trained from, which `!retrain` reuses) and `guilds/<server id>/models/` (its
model store). Back up the whole folder; mount it as one volume in Docker.

"""


def _intro() -> str:
    """The docs' opening, the secrets named from the settings models."""
    bot_secrets = _names(BotSettings, _secrets(BotSettings))
    settings = (
        "The bot reads its settings from the environment or from a `.env` file in its working "
        "folder (environment variables win; names are read without regard to case). Secrets "
        f"are never logged or echoed. The bot's secrets are {bot_secrets}: "
        "none of them reaches a process the bot starts. The training process reads the training "
        "settings too (`DOPPELTWEET_MAX_FILE_MB`, … — see `training/config.py`) with their "
        f"secrets {_names(TrainingSettings, TRAINING_SECRETS)}; the generation process gets "
        f"{_names(TrainingSettings, GENERATION_SECRETS)} only."
    )
    wrapped = textwrap.fill(settings, width=99, break_long_words=False, break_on_hyphens=False)
    return f"# Configuration\n\n{wrapped}\n\n{_MINIMAL_ENV}"


def configuration_doc() -> str:
    """The whole of docs/configuration.md (``python -m bot.config_docs > docs/configuration.md``
    writes it)."""
    return (
        _intro()
        + f"## {BotSettings.SECTION}\n\n"
        + bot_tables(level=3)
        + "\n## Training (the CLI and the bot's training processes)\n\n"
        + config_table(TrainingSettings)
    )


if __name__ == "__main__":  # pragma: no cover - regenerates the docs
    print(configuration_doc(), end="")
