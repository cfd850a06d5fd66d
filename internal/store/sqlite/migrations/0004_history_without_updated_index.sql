-- Every delivery moves its record's entry in history_updated (Finish sets
-- updated), a page of the index written at nearly every commit. Prune, its
-- only reader, finds old records by history_received instead: a record is
-- received before it is updated, so every record updated before a time
-- was received before it too (as the PostgreSQL engine does); Prune asks
-- for both, should the clock have stepped back in between.
DROP INDEX history_updated;
