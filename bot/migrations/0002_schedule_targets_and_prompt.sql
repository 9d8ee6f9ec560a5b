-- Auto-posts to Bluesky and Mastodon (opt-in per schedule, like to_x), a prompt per schedule
-- ('' = the model opens the tweet), and where each network shows a post.
ALTER TABLE schedules ADD COLUMN to_bluesky INTEGER NOT NULL DEFAULT 0;
ALTER TABLE schedules ADD COLUMN to_mastodon INTEGER NOT NULL DEFAULT 0;
ALTER TABLE schedules ADD COLUMN prompt TEXT NOT NULL DEFAULT '';

-- JSON {"x" | "bluesky" | "mastodon": "<the post's address, else its id>"}.
ALTER TABLE generated_tweets ADD COLUMN posted_to TEXT NOT NULL DEFAULT '{}';
