"""doppeltweet's training pipeline: sources → cleaning → dataset → fine-tuning → generation.

A plain library plus the ``doppeltweet`` CLI; it never imports discord.
"""
