-- The console's history search (store.Store.Search, README "store").

-- The decoded Subject header, kept only with history_subjects on. A
-- column with a constant default is added without rewriting the table.
ALTER TABLE history ADD COLUMN subject text NOT NULL DEFAULT '';

-- history_fold(text) is text in lower case, for the case-insensitive
-- matches of a search: Unicode letters included whatever the database's
-- locale, through ICU's root collation where the server has ICU (lower()
-- under a C locale folds ASCII letters only), else as the locale does.
-- The embedded engine registers a function of the same name.
DO $$
BEGIN
	IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
		CREATE FUNCTION history_fold(t text) RETURNS text
			LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
			AS $f$ SELECT lower(t COLLATE "und-x-icu") $f$;
	ELSE
		CREATE FUNCTION history_fold(t text) RETURNS text
			LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
			AS $f$ SELECT lower(t) $f$;
	END IF;
END
$$;

-- Searches go newest first, a page at a time: ORDER BY received DESC,
-- id DESC LIMIT n walks this index backwards from Until (or from the
-- previous page's last record, a row comparison on the whole key) and
-- stops after n matches. It replaces the index on received alone, which
-- Prune's range on received uses as well.
DROP INDEX history_received;
CREATE INDEX history_received ON history (received, id);

-- The search matches senders and recipients as case-insensitive
-- substrings, which neither a b-tree on mail_from nor a GIN index of
-- whole addresses can answer; no query used them, and every new record
-- paid for both.
DROP INDEX history_from;
DROP INDEX history_rcpts;
