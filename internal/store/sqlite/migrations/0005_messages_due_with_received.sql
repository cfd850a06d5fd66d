-- messages_state_received served one query, Stats' oldest queued message,
-- and cost every enqueue and every delivery an index entry to write and
-- to delete. Stats counts the queue by state and account in one pass of
-- messages_due; with received in it, that pass finds the oldest too, and
-- Claim seeks it as before (state, account, next_attempt).
DROP INDEX messages_state_received;
DROP INDEX messages_due;
CREATE INDEX messages_due ON messages (state, account, next_attempt, received);
