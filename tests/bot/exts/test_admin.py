"""``!retrain``, ``!delete`` and ``!sync``: who may run them, and what they do."""

from __future__ import annotations

import simcord
from discord.ext import commands
from discord_world import World, add_model, not_admin

from bot.config import BotSettings
from bot.store import Store
from training.errors import InputError


async def test_delete_by_a_member_without_manage_server_is_refused(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    path = await add_model(store, bot_settings, world.guild.id, "jack")
    await world.alice.send(world.channel, "!delete @jack")
    assert world.last_text() == "Only members with the Manage Server permission can do that."
    assert world.handled_errors() == [not_admin()]
    assert path.exists() and await store.get_model(world.guild.id, "jack") is not None


async def test_delete_by_an_admin_removes_files_record_and_cached_model(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    path = await add_model(store, bot_settings, world.guild.id, "jack")
    await world.alice.send(world.channel, "!tweet @jack")
    cache = world.env.bot.cache  # type: ignore[attr-defined]
    assert path in cache
    await world.admin.send(world.channel, "!delete @jack")
    assert world.last_text() == "Deleted the model **jack**."
    assert not path.exists()
    assert await store.get_model(world.guild.id, "jack") is None
    assert path not in cache


async def test_an_owner_id_from_the_configuration_counts_as_admin(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    path = await add_model(store, bot_settings, world.guild.id, "jack")
    bot_settings.owner_ids = frozenset({world.bob.id})
    await world.bob.send(world.channel, "!delete jack")
    assert world.last_text() == "Deleted the model **jack**."
    assert not path.exists()


async def test_delete_of_an_unknown_model_is_one_sentence(world: World) -> None:
    await world.admin.send(world.channel, "!delete @nobody")
    assert world.last_text().startswith("This server has no model of @nobody")
    assert world.handled_errors() == [InputError]


async def test_delete_without_a_handle_says_what_is_missing(world: World) -> None:
    await world.admin.send(world.channel, "!delete")
    assert world.last_text() == (
        "handle is a required argument that is missing; see `!help` for how to use `!delete`."
    )
    assert world.handled_errors() == [commands.MissingRequiredArgument]


async def test_retrain_by_an_admin_trains_again_from_the_same_sources(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    await add_model(store, bot_settings, world.guild.id, "jack", sources=("bluesky",))
    before = await store.get_model(world.guild.id, "jack")
    await world.admin.send(world.channel, "!retrain @jack")
    messages = world.bot_messages()
    assert messages[0].content == "**Job #1 · jack** — Done"
    assert messages[-1].content.startswith("**jack** is trained.")
    after = await store.get_model(world.guild.id, "jack")
    assert after is not None and before is not None
    assert after.sources == ("bluesky",) and after.updated_at >= before.updated_at
    [job] = await store.recent_jobs(world.guild.id)
    assert job.user_id == world.admin.id and job.state == "succeeded"


async def test_retrain_by_a_member_is_refused(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    await add_model(store, bot_settings, world.guild.id, "jack")
    await world.alice.send(world.channel, "!retrain @jack")
    assert world.last_text() == "Only members with the Manage Server permission can do that."
    assert world.handled_errors() == [not_admin()]
    assert await store.recent_jobs(world.guild.id) == []


async def test_sync_is_for_the_bot_owner_only(world: World, simcord_env: simcord.Env) -> None:
    await world.admin.send(world.channel, "!sync")
    assert world.last_text() == "Only the bot's owner can do that."
    assert world.handled_errors() == [commands.NotOwner]
    assert "help" not in world.alice.available_commands(world.channel)


async def test_sync_by_the_owner_publishes_the_slash_commands(
    world: World, simcord_env: simcord.Env
) -> None:
    simcord_env.bot.owner_ids.add(world.bob.id)  # type: ignore[attr-defined]
    await world.bob.send(world.channel, "!sync")
    assert world.last_text() == "Synced 13 slash commands."
    visible = set(world.alice.available_commands(world.channel))
    assert {"train", "tweet", "models", "jobs", "cancel", "forgetme", "help"} <= visible
    # Admin commands are hidden from members without Manage Server by default permissions.
    assert not {"retrain", "delete"} & visible
    assert not any(name.startswith("autopost") for name in visible)
    assert {"retrain", "delete"} <= set(world.admin.available_commands(world.channel))
    result = await world.alice.slash(world.channel, "help")
    assert result.response.embeds[0].title == "doppeltweet"


async def test_admin_slash_commands_declare_manage_server_as_default_permission(
    simcord_env: simcord.Env,
) -> None:
    tree = simcord_env.bot.tree  # type: ignore[attr-defined]
    for name in ("retrain", "delete"):
        command = tree.get_command(name)
        assert command.default_permissions.manage_guild, name
        assert command.guild_only, name


async def _x_and_own_models_of_alice(world: World, store: Store, settings: BotSettings) -> None:
    """The X handle alice's model (``alice``) beside alice's own model (``alice+discord``)."""
    await add_model(store, settings, world.guild.id, "alice")
    await world.alice.send(world.channel, "words only alice wrote")
    await world.alice.send(world.channel, "!train me")
    assert world.handled_errors() == []
    names = sorted(m.name for m in await store.list_models(world.guild.id))
    assert names == ["alice", "alice+discord"]


async def test_an_admin_deletes_a_members_own_model_by_its_name(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    await _x_and_own_models_of_alice(world, store, bot_settings)
    await world.admin.send(world.channel, "!delete alice+discord")
    assert world.handled_errors() == []
    assert world.last_text() == "Deleted the model **alice+discord**."
    assert [m.name for m in await store.list_models(world.guild.id)] == ["alice"]
    # @alice typed as text still names the X handle's model.
    await world.admin.send(world.channel, "!delete @alice")
    assert world.last_text() == "Deleted the model **alice**."
    assert await store.list_models(world.guild.id) == []


async def test_an_admins_mention_of_a_member_names_their_own_model(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    await _x_and_own_models_of_alice(world, store, bot_settings)
    await world.admin.send(world.channel, f"!retrain {world.alice.mention}")
    assert world.handled_errors() == []
    [job, _own_training] = await store.recent_jobs(world.guild.id)
    assert job.model_name == "alice+discord" and job.user_id == world.admin.id
    await world.admin.send(world.channel, f"!delete {world.alice.mention}")
    assert world.handled_errors() == []
    assert world.last_text() == "Deleted the model **alice+discord**."
    [kept] = await store.list_models(world.guild.id)
    assert kept.name == "alice" and kept.path.is_dir()


async def test_an_admin_retrains_a_members_own_model_by_its_name(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    await _x_and_own_models_of_alice(world, store, bot_settings)
    await world.admin.send(world.channel, "!retrain `@Alice+discord`")
    assert world.handled_errors() == []
    [job, _own_training] = await store.recent_jobs(world.guild.id)
    assert job.model_name == "alice+discord" and job.state == "succeeded"
    model = await store.get_model(world.guild.id, "alice+discord")
    assert model is not None and model.owner_id == world.alice.id


async def test_an_own_model_that_does_not_exist_is_one_sentence(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    path = await add_model(store, bot_settings, world.guild.id, "carol")
    await world.admin.send(world.channel, "!delete carol+discord")
    assert world.handled_errors() == [InputError]
    assert world.last_text() == (
        "This server has no model carol+discord; a member makes their own with `!train me`."
    )
    # A mention of a member without an own model says how to type an X handle.
    await world.admin.send(world.channel, f"!delete {world.bob.mention}")
    assert world.handled_errors() == [InputError]
    assert world.last_text().startswith("Discord turned that into a mention of a server member")
    assert path.is_dir() and await store.get_model(world.guild.id, "carol") is not None
