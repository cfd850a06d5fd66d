-- The data key a message's body is sealed with (0: stored in clear), so
-- that taking a message out of the queue does not look through its chunks
-- for the keys that may go with it (store.Finish, store.Delete). A
-- message queued before this column has none (NULL): its chunks are
-- looked through as before.
ALTER TABLE messages ADD COLUMN body_key INTEGER;
