-- The store-and-forward queue and the delivery history (README "Several
-- instances"). Tables are created in the first schema of the search_path
-- and belong to the role that runs this (Options.Role, else the user).

-- A queued (or held) message. Recipients are a JSON array read and
-- written with their message, so that a delivery result is one UPDATE of
-- one row. fillfactor leaves room on each page for the new version of a
-- row that a claim writes, so that it can stay on its page (a HOT update
-- writes no index).
CREATE TABLE messages (
	id           text        NOT NULL PRIMARY KEY,
	account      text        NOT NULL,
	listener     text        NOT NULL,
	client       text        NOT NULL,
	mail_from    text        NOT NULL,
	mail_params  text[]      NOT NULL,
	rcpts        jsonb       NOT NULL,
	pending      integer     NOT NULL, -- recipients still pending (Claim skips 0)
	size         bigint      NOT NULL,
	chunks       bigint      NOT NULL, -- body chunks: a reader knows when one is missing
	header_id    text        NOT NULL,
	received     timestamptz NOT NULL,
	expires      timestamptz NOT NULL,
	next_attempt timestamptz NOT NULL,
	attempts     integer     NOT NULL,
	last_reply   text        NOT NULL,
	state        text        NOT NULL CHECK (state IN ('queued', 'held')),
	bounce       boolean     NOT NULL,
	lease_owner  text        NOT NULL DEFAULT '',
	lease_until  timestamptz,          -- NULL: no lease
	-- when an operator's Retry came during the current lease (NULL: none):
	-- the attempt's Finish must not push the message back to later
	retried      timestamptz
) WITH (fillfactor = 80);

-- Claim goes account by account along this index: an account left out of
-- a claim (at its connection cap, or postponed) with a long backlog is
-- stepped over in one seek instead of row by row. Only claimable states
-- are in it.
CREATE INDEX messages_due ON messages (account, next_attempt) WHERE state = 'queued' AND pending > 0;
-- Stats: the oldest queued message.
CREATE INDEX messages_state_received ON messages (state, received);

-- Wrapped data keys (envelope encryption). Identity values are never
-- reused, so a key cached in memory by ID can never be the wrong one.
CREATE TABLE data_keys (
	id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	wrapped bytea  NOT NULL
);

CREATE TABLE chunks (
	msg_id text   NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
	seq    bigint NOT NULL,
	key_id bigint REFERENCES data_keys (id), -- NULL: stored in clear
	data   bytea  NOT NULL,                  -- sealed: nonce || ciphertext || tag
	PRIMARY KEY (msg_id, seq)
);
-- Chunks are stored as they are: sealed ones do not compress, and mail
-- mostly carries compressed or base64 attachments.
ALTER TABLE chunks ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX chunks_key ON chunks (key_id) WHERE key_id IS NOT NULL;

-- The history of every message, direct mode included. Its indexes serve
-- the search of the history by time, sender, recipient and Message-ID;
-- none is on a column a delivery changes (state, updated), so that those
-- updates can stay on their page (HOT) and write no index. Prune finds
-- old records by received (a record is updated after it was received).
CREATE TABLE history (
	id        text        NOT NULL PRIMARY KEY,
	mode      text        NOT NULL,
	listener  text        NOT NULL,
	client    text        NOT NULL,
	account   text        NOT NULL,
	mail_from text        NOT NULL,
	rcpts     text[]      NOT NULL,
	size      bigint      NOT NULL,
	header_id text        NOT NULL,
	received  timestamptz NOT NULL,
	state     text        NOT NULL,
	updated   timestamptz NOT NULL
) WITH (fillfactor = 90);

CREATE INDEX history_received ON history (received);
CREATE INDEX history_from ON history (mail_from, received);
CREATE INDEX history_header_id ON history (header_id) WHERE header_id <> '';
CREATE INDEX history_rcpts ON history USING gin (rcpts);

-- Keyed by message: a message's events are found, and pruned, by one
-- range of the key. seq numbers events in write order (it breaks ties
-- between equal times).
CREATE TABLE events (
	msg_id text        NOT NULL,
	seq    bigint      GENERATED ALWAYS AS IDENTITY,
	at     timestamptz NOT NULL,
	type   text        NOT NULL,
	rcpt   text        NOT NULL,
	reply  text        NOT NULL,
	PRIMARY KEY (msg_id, seq)
);

-- Ping writes here: it proves that a write can be committed.
CREATE TABLE heartbeat (
	id integer     PRIMARY KEY CHECK (id = 1),
	at timestamptz NOT NULL
);
