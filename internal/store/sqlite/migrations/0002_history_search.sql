-- The console's history search (store.Store.Search, README "store").

-- The decoded Subject header, kept only with history_subjects on.
ALTER TABLE history ADD COLUMN subject TEXT NOT NULL DEFAULT '';

-- Searches go newest first, a page at a time: ORDER BY received DESC,
-- id DESC LIMIT n walks this index backwards from Until (or from the
-- previous page's last record) and stops after n matches, so a search
-- reads a page's worth of the history, not all of it. The table has no
-- rowid: each entry ends with the primary key, which makes the index
-- (received, id), the whole sort order.
CREATE INDEX history_received ON history (received);

-- Search by Message-ID: one seek.
CREATE INDEX history_header_id ON history (header_id);
