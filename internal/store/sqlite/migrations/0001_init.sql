-- The store-and-forward queue and the delivery history.
-- Times are Unix nanoseconds (0: none). Recipients and MAIL parameters are
-- JSON arrays: they are always read and written with their message, so a
-- delivery result is one UPDATE of one row.

CREATE TABLE messages (
	id           TEXT    NOT NULL PRIMARY KEY,
	account      TEXT    NOT NULL,
	listener     TEXT    NOT NULL,
	client       TEXT    NOT NULL,
	mail_from    TEXT    NOT NULL,
	mail_params  TEXT    NOT NULL,
	rcpts        TEXT    NOT NULL,
	pending      INTEGER NOT NULL, -- recipients still pending (Claim skips 0)
	size         INTEGER NOT NULL,
	chunks       INTEGER NOT NULL, -- body chunks: a reader knows when one is missing
	header_id    TEXT    NOT NULL,
	received     INTEGER NOT NULL,
	expires      INTEGER NOT NULL,
	next_attempt INTEGER NOT NULL,
	attempts     INTEGER NOT NULL,
	last_reply   TEXT    NOT NULL,
	state        TEXT    NOT NULL CHECK (state IN ('queued', 'held')),
	bounce       INTEGER NOT NULL,
	lease_owner  TEXT    NOT NULL DEFAULT '',
	lease_until  INTEGER NOT NULL DEFAULT 0,
	-- when an operator's Retry came during the current lease (0: none):
	-- the attempt's Finish must not push the message back to later
	retried      INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

-- Every index is written at each enqueue and each delivery, so there are
-- only those the hot paths need: Claim (due, by account: an account left
-- out of a claim, at its connection cap with a long backlog, is stepped
-- over in one seek instead of row by row) and the oldest queued message
-- (state, received). Listing by account or by time, and releasing an
-- instance's leases (at its start and stop), scan the queue. Queue IDs
-- grow with time, so rows and index entries are appended at the right
-- edge of their b-trees.
CREATE INDEX messages_due ON messages (state, account, next_attempt);
CREATE INDEX messages_state_received ON messages (state, received);

-- Wrapped data keys (envelope encryption). AUTOINCREMENT: an ID is never
-- reused, so a key cached in memory by ID can never be the wrong one.
CREATE TABLE data_keys (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	wrapped BLOB NOT NULL
) STRICT;

CREATE TABLE chunks (
	msg_id TEXT    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
	seq    INTEGER NOT NULL,
	key_id INTEGER REFERENCES data_keys (id), -- NULL: stored in clear
	data   BLOB    NOT NULL,                  -- sealed: nonce || ciphertext || tag
	PRIMARY KEY (msg_id, seq)
) STRICT;

CREATE INDEX chunks_key ON chunks (key_id) WHERE key_id IS NOT NULL;

CREATE TABLE history (
	id        TEXT    NOT NULL PRIMARY KEY,
	mode      TEXT    NOT NULL,
	listener  TEXT    NOT NULL,
	client    TEXT    NOT NULL,
	account   TEXT    NOT NULL,
	mail_from TEXT    NOT NULL,
	rcpts     TEXT    NOT NULL,
	size      INTEGER NOT NULL,
	header_id TEXT    NOT NULL,
	received  INTEGER NOT NULL,
	state     TEXT    NOT NULL,
	updated   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX history_updated ON history (updated);

-- Keyed by message: a message's events are found, and pruned, by one
-- range of the key, with no index of their own to write. seq numbers a
-- message's events in write order (it breaks ties between equal times).
CREATE TABLE events (
	msg_id TEXT    NOT NULL,
	seq    INTEGER NOT NULL,
	at     INTEGER NOT NULL,
	type   TEXT    NOT NULL,
	rcpt   TEXT    NOT NULL,
	reply  TEXT    NOT NULL,
	PRIMARY KEY (msg_id, seq)
) STRICT, WITHOUT ROWID;

-- Ping writes here: it proves that a write can be committed.
CREATE TABLE heartbeat (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	at INTEGER NOT NULL
) STRICT;
