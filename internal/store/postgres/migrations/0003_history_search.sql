-- The console's history search (store.Store.Search, README "store").
-- Its indexes are built by 0005_history_indexes.sql, without a
-- transaction, so that instances still running keep writing the history
-- meanwhile.

-- The decoded Subject header, kept only with history_subjects on. A
-- column with a constant default is added without rewriting the table,
-- but under a lock that stops every reader and writer of the history for
-- that instant: the step runs with a short lock_timeout and is tried
-- again later rather than wait behind a long transaction with everyone
-- else queued behind it (migrate.go).
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
