"""A server's models: found by handle, trained again, deleted.

Deleting a model is one operation here, whoever asks (``!delete``, ``!forgetme``): its folder,
the uploads it was trained from (:mod:`bot.services.uploads`), its records and its cached copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.config import BotSettings
from bot.formatting import escape_user_text
from bot.own_messages import OWN_MODEL_SUFFIX
from bot.services import uploads
from bot.store import Job, ModelRecord, Store
from training.errors import InputError
from training.handles import Handle, model_name

if TYPE_CHECKING:
    from bot.jobs import JobRunner
    from bot.services.training_requests import TrainingRequests


#: A mention of one member (``<@123>`` or ``<@!123>``), as Discord writes a typed ``@alice``.
_MEMBER_MENTION = re.compile(r"<@!?(\d{1,20})>")
#: A member's own model named directly (``alice+discord``, see
#: :func:`bot.own_messages.own_model_name`).
_OWN_MODEL = re.compile(rf"@?([a-z0-9_]{{1,15}}){re.escape(OWN_MODEL_SUFFIX)}", re.IGNORECASE)


class LoadedModels(Protocol):
    """What holds models in memory (:class:`bot.model_cache.ModelCache`): it forgets one."""

    def invalidate(self, path: Path) -> None: ...


class Models:
    """Finds, retrains and deletes the models of a server."""

    def __init__(
        self,
        store: Store,
        settings: BotSettings,
        runner: JobRunner,
        requests: TrainingRequests,
        cache: LoadedModels,
    ) -> None:
        self.store = store
        self.settings = settings
        self.runner = runner
        self.requests = requests
        self.cache = cache

    async def find(self, guild_id: int, handle: Handle | None) -> ModelRecord:
        """The handle's own model, else the latest one it is part of; no handle: the latest."""
        prefix = self.settings.prefix
        if handle is None:
            model = await self.store.latest_model(guild_id)
            if model is None:
                raise InputError(
                    f"This server has no models yet; train one with `{prefix}train @handle` "
                    "and an attached X archive."
                )
            return model
        own = await self.store.get_model(guild_id, model_name([handle]))
        if own is not None:
            return own
        shared = await self.store.models_for_handle(guild_id, handle)
        if shared:
            return shared[0]
        # Inside backticks markdown is not rendered, so the handle goes in as typed (handles are
        # validated: letters, digits, _ . - :) and the suggestion works when pasted.
        shown = escape_user_text(handle.display)
        raise InputError(
            f"This server has no model of {shown}; train one with `{prefix}train {handle.display}`."
        )

    async def member_model(self, guild_id: int, text: str) -> ModelRecord | None:
        """The own ``!train me`` model of the member ``text`` mentions (found by their id); None
        when ``text`` is not one member's mention or that member has no own model here."""
        mentioned = _MEMBER_MENTION.fullmatch(text.strip())
        if mentioned is None:
            return None
        owned = await self.store.models_owned_by(guild_id, int(mentioned.group(1)))
        return owned[0] if owned else None

    async def own_named(self, guild_id: int, text: str) -> str | None:
        """The member's own model ``text`` names: a member's mention (by their id) or
        ``alice+discord``; None when ``text`` names neither (then it is a handle)."""
        token = text.strip().strip("`")
        member_model = await self.member_model(guild_id, token)
        if member_model is not None:
            return member_model.name
        own = _OWN_MODEL.fullmatch(token)
        if own is not None:
            name = own.group(1).lower() + OWN_MODEL_SUFFIX
            record = await self.store.get_model(guild_id, name)
            if record is None:
                raise InputError(
                    f"This server has no model {escape_user_text(name)}; a member makes their "
                    f"own with `{self.settings.prefix}train me`."
                )
            return record.name
        return None

    async def _named(self, guild_id: int, model: str | Handle) -> str:
        """A model's name: given, or the model a handle names (:meth:`find`)."""
        if isinstance(model, Handle):
            return (await self.find(guild_id, model)).name
        return model

    async def retrain(
        self, guild_id: int, channel_id: int, user_id: int, model: str | Handle
    ) -> Job:
        """Train a model (by name, or the one a handle names) again from the sources it was last
        trained from (API/Bluesky refetched); a member's own model stays theirs, whoever asks."""
        name = await self._named(guild_id, model)
        record = await self.store.get_model(guild_id, name)
        if record is None:
            raise InputError(await self._unknown(guild_id, name))
        if not record.sources:
            raise InputError(
                f"The bot does not know what {name} was trained from; train it again with "
                f"{self.settings.prefix}train and an attachment."
            )
        return await self.requests.submit(
            guild_id,
            channel_id,
            user_id,
            record.handles,
            record.sources,
            owner_id=record.owner_id,
            name=record.name,
        )

    async def delete(self, guild_id: int, model: str | Handle) -> ModelRecord:
        """Delete a server's model (by name, or the one a handle names): its folder, its uploads,
        its record and schedules, its cached copy; refused while a job of it is queued or
        running."""
        name = await self._named(guild_id, model)
        record = await self.store.get_model(guild_id, name)
        if record is None:
            raise InputError(await self._unknown(guild_id, name))
        active = await self.store.active_job_for_model(guild_id, name)
        if active is not None:
            raise InputError(
                f"The model {name} has job #{active.id} {active.state}; cancel it with "
                f"{self.settings.prefix}cancel {active.id} first."
            )
        await self._delete_folders(guild_id, [record])
        await self.store.delete_model(guild_id, name)
        await self._forget_files(guild_id, [record], record.sources)
        return record

    async def forget_member(self, guild_id: int, member_id: int) -> tuple[list[ModelRecord], int]:
        """Remove everything the bot keeps of a member's own messages in a server: their own
        jobs (queued or running ones are cancelled), their own models, the uploads they were
        trained from, the tweets they generated and the records of all of it. Returns the models
        removed and how many jobs were cancelled."""
        cancelled = 0
        active = [
            *await self.store.queued_jobs(guild_id),
            *await self.store.running_jobs(guild_id),
        ]
        for job in active:
            if job.owner_id == member_id:
                with contextlib.suppress(InputError):  # it ended meanwhile
                    await self.runner.cancel(
                        job.id, guild_id=guild_id, user_id=member_id, is_admin=True
                    )
                    cancelled += 1
        records = await self.store.models_owned_by(guild_id, member_id)
        await self._delete_folders(guild_id, records)
        # Files first: if the database then fails, asking again finds the records and ends it.
        sources = await self.store.forget_member(guild_id, member_id, [r.name for r in records])
        await self._forget_files(guild_id, records, sources)
        return records, cancelled

    async def _delete_folders(self, guild_id: int, records: Sequence[ModelRecord]) -> None:
        from training.store import ModelStore

        store = ModelStore(self.runner.models_dir(guild_id))
        for record in records:
            if store.path(record.name).exists():
                await asyncio.to_thread(store.delete, record.name)

    async def _forget_files(
        self, guild_id: int, records: Sequence[ModelRecord], sources: Sequence[str]
    ) -> None:
        """The uploads of deleted models (and ``sources``), and their cached copies."""
        every = [*sources, *(s for record in records for s in record.sources)]
        await uploads.discard(self.settings, guild_id, every)
        for record in records:
            self.cache.invalidate(record.path)

    async def _unknown(self, guild_id: int, name: str) -> str:
        known = [m.name for m in await self.store.list_models(guild_id)]
        listing = (
            ", ".join(known) if known else f"none yet (train one with {self.settings.prefix}train)"
        )
        return f"There is no model called {name} in this server; known: {listing}."
