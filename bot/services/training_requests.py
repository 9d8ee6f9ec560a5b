"""What a ``!train`` request may ask for, checked in one place before it reaches the queue.

Attachments (count and size, then each saved file), the sources (uploads of this server, the X
API, or the handles' networks), the options (a job's own or the server's), a member's own model
(``!train me``) and the training command line a queued job runs with. Every refusal is one
:class:`~training.errors.InputError` sentence, and a refused request leaves no upload behind.
The queue itself (the same model twice, a member's cap) is :class:`bot.jobs.JobRunner`'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.config import BotSettings
from bot.formatting import escape_user_text
from bot.own_messages import OWN_MESSAGES_FILE, TRAIN_ME_SETTING
from bot.services import uploads
from bot.sources import API_SOURCE, REMOTE_SOURCES, network_sources
from bot.store import Job, Store
from training.config import get_settings as training_settings
from training.errors import InputError
from training.handles import MAX_HANDLES, Handle, model_name
from training.sources import formats

if TYPE_CHECKING:
    from bot.jobs import JobRunner

#: Job options a request may set (each overrides the bot-wide setting of the same name).
OPTION_KEYS = frozenset({"base_model", "lora", "max_steps", "epochs"})
#: Discord lets a message carry at most ten attachments.
MAX_ATTACHMENTS = 10

_MB = 1024 * 1024
_BASE_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


class Upload(Protocol):
    """A file a member attached (a ``discord.Attachment``): its name, announced size, saving."""

    @property
    def filename(self) -> str: ...

    @property
    def size(self) -> int: ...

    async def save(self, fp: Path) -> int: ...


@dataclass(frozen=True, slots=True)
class Received:
    """A request whose sources are checked and saved, ready to queue."""

    handles: list[Handle]
    sources: list[str]
    #: The files saved for it (deleted again when the request is refused).
    saved: list[Path] = field(default_factory=list)
    owner_id: int | None = None
    name: str | None = None


def no_source_sentence(prefix: str) -> str:
    """What to do when ``!train`` got no tweets to learn from."""
    return (
        f"Attach your X archive (the zip, or tweets.js and the other .js files from its data/ "
        f"folder), a CSV, JSONL or plain-text (.txt, one post per line) file of tweets to "
        f"`{prefix}train @handle`, or name Bluesky handles (bluesky:name.bsky.social) or "
        f"Mastodon handles (mastodon:@name@server), or add `api` to read the paid X API."
    )


def size_refusal(size: int, limit: int, limit_mb: float) -> str:
    """``10.01 MB, over this bot's 10 MB limit`` — in bytes when MB would round into the limit."""
    shown = f"{size / _MB:.2f}"
    if float(shown) > limit_mb:
        return f"{shown} MB, over this bot's {limit_mb:g} MB limit"
    return f"{size:,} bytes, over this bot's limit of {limit:,} bytes ({limit_mb:g} MB)"


def check_attachments(settings: BotSettings, files: Sequence[Upload]) -> None:
    """Count and sizes, from the attachments' metadata, before anything is downloaded."""
    if len(files) > MAX_ATTACHMENTS:
        raise InputError(
            f"Attach at most {MAX_ATTACHMENTS} files to one training, not {len(files)}."
        )
    limit = settings.max_attachment_bytes
    total = sum(f.size for f in files)
    total_limit = int(settings.max_upload_total_mb * _MB)
    if len(files) > 1 and total > total_limit:
        over = size_refusal(total, total_limit, settings.max_upload_total_mb)
        raise InputError(
            f"Together the files are {over} for one training; attach only tweets.js (and "
            "note-tweet.js or tweets-part1.js… if you have them) from your archive's data/ "
            "folder."
        )
    for file in files:
        if file.size > limit:
            which = "That file" if len(files) == 1 else "One of the files"
            over = size_refusal(file.size, limit, settings.max_attachment_mb)
            raise InputError(
                f"{which} is {over}; attach only the .js "
                "files from your archive's data/ folder (tweets.js, and note-tweet.js or "
                "tweets-part1.js… if you have them) instead of the whole zip."
            )


def check_saved(settings: BotSettings, path: Path) -> None:
    """A saved file larger than its announced size is refused like one announced so."""
    size = path.stat().st_size
    limit = settings.max_attachment_bytes
    if size > limit:
        over = size_refusal(size, limit, settings.max_attachment_mb)
        raise InputError(f"{path.name} is {over}.")


def check_sources(
    settings: BotSettings, guild_id: int, handles: Sequence[Handle], sources: Sequence[str]
) -> list[str]:
    """``["api"]``, ``["bluesky"]`` or ``["mastodon"]``, the network of each handle (one per
    handle), or one upload of this server for all handles or one per handle."""
    if not sources:
        raise InputError(
            f"Attach {formats.IN_WORDS}, or name bluesky: or mastodon: handles, to train from."
        )
    remote = [s for s in sources if s in REMOTE_SOURCES]
    if remote and len(sources) > 1 and list(sources) != network_sources(handles):
        raise InputError(
            "Train from attachments, the X API or the handles' networks, one of them, not a mix."
        )
    if not remote and len(sources) not in (1, len(handles)):
        raise InputError(
            f"Attach one file for all handles or one per handle ({len(handles)}), "
            f"not {len(sources)}."
        )
    root = settings.guild_uploads_dir(guild_id)
    checked: list[str] = []
    for source in sources:
        if source in REMOTE_SOURCES:
            checked.append(source)
            continue
        path = Path(source)
        if not uploads.is_inside(path, root):
            raise InputError("Training files must be attachments uploaded in this server.")
        if not path.exists():
            raise InputError(
                f"The file {path.name} is gone from the bot's storage; attach it again."
            )
        checked.append(str(path.resolve()))
    if len(set(checked)) != len(checked) and not remote:
        raise InputError("Each source may be named only once.")
    return checked


def check_options(settings: BotSettings, options: dict[str, Any] | None) -> dict[str, Any]:
    """The job options, each of a known key and a usable value."""
    options = dict(options or {})
    unknown = set(options) - OPTION_KEYS
    if unknown:
        raise InputError(f"{sorted(unknown)[0]!r} is not a training option.")
    base = options.get("base_model")
    # A folder is only allowed as the bot-wide setting the operator chose; a job or a server
    # names a Hugging Face id or a built-in (gpt2, smollm2-135m, tiny), never a path.
    if (
        base is not None
        and base != settings.base_model
        and (not isinstance(base, str) or not _BASE_MODEL_ID.fullmatch(base) or ".." in base)
    ):
        raise InputError(
            "The base model must be a Hugging Face model id such as gpt2 or "
            "HuggingFaceTB/SmolLM2-135M, or smollm2-135m or tiny."
        )
    if "lora" in options and not isinstance(options["lora"], bool):
        raise InputError("The LoRA option is either on or off.")
    steps = options.get("max_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InputError("The most training steps must be a whole number of at least 1.")
    epochs = options.get("epochs")
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1
    ):
        raise InputError("The number of epochs must be a whole number of at least 1.")
    return options


def check_handles(handles: Sequence[Handle], name: str | None) -> tuple[list[Handle], str]:
    """1 to ``MAX_HANDLES`` different handles, and the model's name (theirs, or ``name``)."""
    handle_list = list(handles)
    if not handle_list:
        raise InputError("Name at least one handle, e.g. @jack.")
    if len(set(handle_list)) != len(handle_list) or len(handle_list) > MAX_HANDLES:
        raise InputError(f"Name 1 to {MAX_HANDLES} different handles.")
    if name is None:
        return handle_list, model_name(handle_list)
    from training.store import check_model_name

    check_model_name(name)
    return handle_list, name


def training_command(
    job: Job,
    settings: BotSettings,
    *,
    python: str,
    models_dir: Path,
    budget_s: float | None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``python -m training train`` command line of a queued job."""
    options = job.options
    argv = [python, "-m", "training", "train", *(h.spec for h in job.handles)]
    if len(job.sources) == 1 and job.sources[0] in REMOTE_SOURCES:
        argv.append(f"--{job.sources[0]}")  # --api, --bluesky, --mastodon
    else:
        for source in job.sources:  # a network per handle is named as training reads it
            argv += ["--from", source]
    if job.model_name != model_name(job.handles):
        argv += ["--name", job.model_name]
    argv += ["--models-dir", str(models_dir), "--progress-json"]
    argv += ["--base-model", str(options.get("base_model") or settings.base_model)]
    if settings.base_by_language:  # the training process picks by the tweets' language
        argv += ["--base-by-language", json.dumps(settings.base_by_language)]
    if options.get("lora", settings.lora):
        argv.append("--lora")
    max_steps = options.get("max_steps", settings.train_max_steps)
    if max_steps is not None:
        argv += ["--max-steps", str(max_steps)]
    epochs = options.get("epochs", settings.train_epochs)
    if epochs is not None:
        argv += ["--epochs", str(epochs)]
    if max_steps is None and epochs is None:
        # Named, so the run holds to the budget the queue's estimates count with.
        argv += ["--time-budget", f"{budget_s or 0:g}"]
    argv += extra
    return argv


class TrainingRequests:
    """Checks ``!train`` requests, saves their uploads and hands them to the job runner."""

    def __init__(self, store: Store, settings: BotSettings, runner: JobRunner) -> None:
        self.store = store
        self.settings = settings
        self.runner = runner

    # -- intake ---------------------------------------------------------------------------------

    async def receive(
        self,
        guild_id: int,
        handles: list[Handle],
        *,
        use_api: bool = False,
        files: Sequence[Upload] = (),
    ) -> Received:
        """The sources of a request: its attachments (checked, then saved), the X API, or the
        handles' networks; one sentence saying what to attach when it names none."""
        if files:
            if use_api:
                raise InputError("Use either an attachment or `api`, not both.")
            check_attachments(self.settings, files)
            saved = uploads.upload_paths(self.settings, guild_id, [f.filename for f in files])
            try:
                for file, path in zip(files, saved, strict=True):
                    await file.save(path)
                    check_saved(self.settings, path)
            except BaseException:
                uploads.remove_saved(saved)
                raise
            # Several files are the .js files of one archive: their folder is the source.
            source = str(saved[0] if len(saved) == 1 else saved[0].parent)
            return Received(handles, [source], saved)
        if use_api:
            if any(h.platform != "x" for h in handles):
                raise InputError(
                    "The X API reads X handles only; Bluesky and Mastodon handles need no `api`."
                )
            token = training_settings().x_bearer_token
            if token is None or not token.get_secret_value():
                raise InputError(
                    "The X API is not configured on this bot (it is paid: about $16 for 3,200 "
                    "tweets); attach your free X archive instead."
                )
            return Received(handles, [API_SOURCE])
        networks = network_sources(handles)
        if networks is None:
            raise InputError(no_source_sentence(self.settings.prefix))
        return Received(handles, networks)  # Bluesky's public feed, each Mastodon server's API

    async def train_me_enabled(self, guild_id: int, switch: bool | None = None) -> bool:
        """Whether ``!train me`` is on in this server, after switching it when ``switch`` says."""
        if switch is not None:
            await self.store.set_guild_setting(guild_id, TRAIN_ME_SETTING, switch)
        return bool(await self.store.get_guild_setting(guild_id, TRAIN_ME_SETTING, True))

    async def check_own_model(self, guild_id: int, member_id: int, name: str) -> None:
        """``!train me`` is on here, and ``name`` is free or already the member's own model: an
        own model's name holds its member's username, so a member who took the username of
        someone who trained a model of themselves never trains over that one."""
        if not await self.train_me_enabled(guild_id):
            raise InputError(
                f"An admin of this server switched `{self.settings.prefix}train me` off."
            )
        record = await self.store.get_model(guild_id, name)
        if record is not None and record.owner_id != member_id:
            raise InputError(
                f"The model {escape_user_text(name)} is the own model of a member who had your "
                f"username before; an admin can `{self.settings.prefix}delete` it first."
            )

    def receive_own_messages(
        self, guild_id: int, member_id: int, handle: Handle, name: str, lines: Sequence[str]
    ) -> Received:
        """Save a member's collected messages (checked with :meth:`check_own_model` first) as
        the upload of their own model."""
        saved = [uploads.upload_path(self.settings, guild_id, OWN_MESSAGES_FILE)]
        try:
            saved[0].write_text("\n".join(lines) + "\n", encoding="utf-8")
        except BaseException:
            uploads.remove_saved(saved)
            raise
        return Received([handle], [str(saved[0])], saved, owner_id=member_id, name=name)

    async def queue(self, guild_id: int, channel_id: int, user_id: int, received: Received) -> Job:
        """Queue a received request; its saved files are deleted when it is refused."""
        try:
            return await self.submit(
                guild_id,
                channel_id,
                user_id,
                received.handles,
                received.sources,
                owner_id=received.owner_id,
                name=received.name,
            )
        except BaseException:
            uploads.remove_saved(received.saved)
            raise

    # -- submitting -----------------------------------------------------------------------------

    async def submit(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        handles: Sequence[Handle],
        sources: Sequence[str],
        options: dict[str, Any] | None = None,
        *,
        owner_id: int | None = None,
        name: str | None = None,
    ) -> Job:
        """Check a training request and queue it; it starts at once when a slot is free.

        ``owner_id`` marks a job that trains on that member's own messages (``!train me``, or a
        retrain of such a model) and ``name`` stores its model under a name of its own instead
        of the handles' name; the model records both.

        ``sources`` are ``["api"]``, ``["bluesky"]``, ``["mastodon"]``, each handle's network
        (:func:`bot.sources.network_sources`), or saved uploads (:mod:`bot.services.uploads`):
        one for all handles, or one per handle in the order the handles are given (keep the
        order the user typed; the model's name sorts them itself). Options the job does not set
        come from the server's settings (``base_model``, ``lora``, ``max_steps``, ``epochs``),
        then the bot's.
        """
        handle_list, name = check_handles(handles, name)
        checked_sources = check_sources(self.settings, guild_id, handle_list, sources)
        merged = dict(options or {})
        for key in sorted(OPTION_KEYS - set(merged)):
            value = await self.store.get_guild_setting(guild_id, key)
            if value is not None:
                merged[key] = value
        checked_options = check_options(self.settings, merged)
        return await self.runner.enqueue(
            guild_id,
            channel_id,
            user_id,
            name,
            handles=handle_list,
            sources=checked_sources,
            options=checked_options,
            owner_id=owner_id,
        )
