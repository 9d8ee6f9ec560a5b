"""doppeltweet's Discord service: adapts Discord commands to the ``training`` library."""
