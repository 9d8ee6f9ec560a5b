-- Whose own messages a model is made of (`!train me`): the member's Discord id, recorded by the
-- bot when it queued the job, never read from anything a user names. NULL for every other model.
-- Models trained before this column existed stay NULL: the upload file name that marked them
-- could be chosen by any member.
ALTER TABLE jobs ADD COLUMN owner_id INTEGER;
ALTER TABLE models ADD COLUMN owner_id INTEGER;
CREATE INDEX models_by_owner ON models (guild_id, owner_id);
