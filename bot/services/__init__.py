"""The bot's rules between a command and the seams it reaches (store, runner, cache, posters).

One plain module per domain, callable without Discord: :mod:`bot.services.uploads` (saving and
deleting a server's uploads), :mod:`bot.services.training_requests` (what ``!train`` may ask
for), :mod:`bot.services.models` (finding, retraining and deleting a server's models) and
:mod:`bot.services.autoposts` (one auto-post: generate, publish, record). Cogs parse a command,
call one of these and format the answer.
"""
