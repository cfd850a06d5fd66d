-- oauthrelay:no-transaction
-- The indexes of the history search (0003_history_search.sql). This step
-- runs statement by statement outside a transaction (migrate.go) so that
-- the indexes are built and dropped CONCURRENTLY: on a large history a
-- build takes minutes, during which the instances still running the
-- previous version go on recording history and enqueueing (README
-- "Several instances"). Every statement may run again after an
-- interruption: an index an interrupted build left invalid is dropped
-- and built again (migrate.go). A database that a development build's
-- first 0003 migrated already has these indexes; then nothing changes.

-- Searches go newest first, a page at a time: ORDER BY received DESC,
-- id DESC LIMIT n walks history_received (received, id) backwards from
-- Until (or from the previous page's last record, a row comparison on
-- the whole key) and stops after n matches. It replaces the index on
-- received alone of 0001_store.sql, which Prune's range on received uses
-- as well: that one is renamed out of the way first (a change of the
-- catalog that blocks no reader or writer), still serves both until the
-- new one is built, and is dropped then.
DO $$
BEGIN
	IF (SELECT array_agg(a.attname::text ORDER BY k.n)
	      FROM pg_index i,
	           unnest(i.indkey::int2[]) WITH ORDINALITY AS k (attnum, n),
	           pg_attribute a
	     WHERE i.indexrelid = to_regclass('history_received')
	       AND a.attrelid = i.indrelid AND a.attnum = k.attnum) = ARRAY['received'] THEN
		ALTER INDEX history_received RENAME TO history_received_old;
	END IF;
END
$$;
CREATE INDEX CONCURRENTLY IF NOT EXISTS history_received ON history (received, id);
DROP INDEX CONCURRENTLY IF EXISTS history_received_old;

-- The search matches senders and recipients as case-insensitive
-- substrings, which neither a b-tree on mail_from nor a GIN index of
-- whole addresses can answer; no query used them, and every new record
-- paid for both.
DROP INDEX CONCURRENTLY IF EXISTS history_from;
DROP INDEX CONCURRENTLY IF EXISTS history_rcpts;
