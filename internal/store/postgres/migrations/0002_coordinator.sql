-- The state several relay instances share (README "Several instances"):
-- account limits as reservations and connection slots as leases
-- (store.Coordinator). Every call is one statement, most of them one of the
-- functions below, run in its own transaction.
--
-- Times are nanoseconds since the Unix epoch from the callers' clocks
-- (columns and parameters ending in _ns): integers keep the rate
-- limiter's arithmetic exact, the same as Go's time.Duration.
--
-- Concurrency, under READ COMMITTED (checked by coord_lock_key):
--   * a check-then-act on a key (reserving a message or a recipient,
--     acquiring a slot) first locks the key's coord_key row and holds it
--     until commit, so instances take turns per key; every later statement
--     of the function takes a new snapshot, which shows everything the
--     lock's previous holders committed;
--   * everything else is a single-row change or locks its rows first, in
--     one order for everyone: a coord_key row before count or slot rows of
--     that key, slot rows by (key, slot); Cleanup and the stale-row
--     deletions skip locked rows instead of waiting. Nobody waits for a row
--     while holding one that comes later in that order, so there is no
--     deadlock.
--
-- Growth: a key keeps one coord_key row, at most a day of coord_count
-- rows (a reservation deletes its key's older ones), its leases and the
-- waits for it; Cleanup (coord_cleanup.go) deletes what quiet keys and
-- vanished owners leave behind.

-- One row per key: its lock, and the rate limiter's theoretical arrival
-- time (a generic cell rate algorithm: the limiter is full when
-- tat_ns <= now).
CREATE TABLE coord_key (
    key    text   PRIMARY KEY,
    tat_ns bigint NOT NULL DEFAULT 0
);

-- A key's messages and recipients per bucket (a quarter-hour by default)
-- of the rolling 24 hours. A bucket counts while expires_ns > now.
CREATE TABLE coord_count (
    key        text    NOT NULL,
    bucket     bigint  NOT NULL,  -- now / width
    expires_ns bigint  NOT NULL,  -- (bucket + buckets in 24 hours) * width
    msgs       integer NOT NULL DEFAULT 0,
    rcpts      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (key, bucket)
);
CREATE INDEX coord_count_expires ON coord_count (expires_ns);

-- Connection slots: slot of key is leased to owner until until_ns. A row
-- exists while the slot is leased or its lease expired unnoticed.
CREATE TABLE coord_slot (
    key      text    NOT NULL,
    slot     integer NOT NULL,
    owner    text    NOT NULL,
    until_ns bigint  NOT NULL,
    PRIMARY KEY (key, slot)
);
CREATE INDEX coord_slot_owner ON coord_slot (owner, key, slot);

-- owner waits for a slot of key until until_ns (WantSlot). No index on
-- until_ns: WantSlot's updates stay HOT, and Cleanup reads the few rows.
CREATE TABLE coord_want (
    key      text   NOT NULL,
    owner    text   NOT NULL,
    until_ns bigint NOT NULL,
    PRIMARY KEY (key, owner)
);

-- coord_lock_key locks key's row until commit, creating it when missing,
-- and returns its rate state. A row that Cleanup deleted while we waited
-- for it is created again; a concurrent creator's INSERT makes ours wait
-- for its commit and then do nothing.
CREATE FUNCTION coord_lock_key(p_key text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_tat bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- One snapshot per transaction would hide the counts the lock's
        -- previous holder committed.
        RAISE EXCEPTION 'oauthrelay coordinator: needs READ COMMITTED, the session uses %',
            current_setting('transaction_isolation');
    END IF;
    LOOP
        SELECT k.tat_ns INTO v_tat FROM coord_key k WHERE k.key = p_key FOR UPDATE;
        IF FOUND THEN
            RETURN v_tat;
        END IF;
        INSERT INTO coord_key (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    END LOOP;
END
$$;

-- coord_daily_refusal checks one more message (p_rcpts false) or
-- recipient (true) of key against the daily quota p_limit at p_now (0 is
-- none): refused is '' while the window holds fewer, else the quota's kind
-- with the earliest time a counted bucket leaves the window. (plpgsql,
-- not sql: its plan is kept for the session.)
CREATE FUNCTION coord_daily_refusal(p_key text, p_now bigint, p_rcpts boolean, p_limit integer,
    OUT refused text, OUT retry_ns bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_used bigint;
BEGIN
    refused := '';
    retry_ns := 0;
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    SELECT coalesce(sum(v.n), 0), coalesce(min(v.expires_ns) FILTER (WHERE v.n > 0), p_now)
      INTO v_used, retry_ns
      FROM (SELECT c.expires_ns, CASE WHEN p_rcpts THEN c.rcpts ELSE c.msgs END AS n
              FROM coord_count c
             WHERE c.key = p_key AND c.expires_ns > p_now) AS v;
    IF v_used >= p_limit THEN
        refused := CASE WHEN p_rcpts THEN 'daily_recipients' ELSE 'daily_messages' END;
    ELSE
        retry_ns := 0;
    END IF;
END
$$;

-- coord_reserve_message takes one message of key at p_now: first the
-- rolling daily count (refused when p_daily_msgs > 0 and the window holds
-- that many), then a rate token (p_emission_ns = a minute / PerMinute,
-- 0 = no rate limit: refused when the new arrival time is more than
-- p_burst emission intervals ahead), the order of internal/limits. A
-- refusal takes nothing. Granted: refused = '', the bucket counted in and
-- the new arrival time (0 without a rate limit).
CREATE FUNCTION coord_reserve_message(p_key text, p_now bigint,
    p_emission_ns bigint, p_burst integer, p_daily_msgs integer,
    p_width_ns bigint, p_buckets integer,
    OUT refused text, OUT retry_ns bigint, OUT grant_bucket bigint, OUT rate_at bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_tat bigint := coord_lock_key(p_key);
BEGIN
    refused := '';
    retry_ns := 0;
    grant_bucket := p_now / p_width_ns;
    rate_at := 0;
    -- This key's buckets that left the window: the key is locked, so
    -- only Cleanup or a release may hold them, and then they are skipped,
    -- not waited for.
    DELETE FROM coord_count c
     WHERE (c.key, c.bucket) IN (SELECT s.key, s.bucket FROM coord_count s
                                  WHERE s.key = p_key AND s.expires_ns <= p_now
                                    FOR UPDATE SKIP LOCKED);
    SELECT d.refused, d.retry_ns INTO refused, retry_ns FROM coord_daily_refusal(p_key, p_now, false, p_daily_msgs) d;
    IF refused <> '' THEN
        RETURN;
    END IF;
    IF p_emission_ns > 0 THEN
        rate_at := greatest(v_tat, p_now) + p_emission_ns;
        IF rate_at - p_now > p_burst * p_emission_ns THEN
            refused := 'rate_per_minute';
            retry_ns := rate_at - p_burst * p_emission_ns;
            rate_at := 0;
            RETURN;
        END IF;
        UPDATE coord_key k SET tat_ns = rate_at WHERE k.key = p_key;
    END IF;
    INSERT INTO coord_count AS c (key, bucket, expires_ns, msgs)
    VALUES (p_key, grant_bucket, (grant_bucket + p_buckets) * p_width_ns, 1)
    ON CONFLICT (key, bucket) DO UPDATE SET msgs = c.msgs + 1;
END
$$;

-- coord_reserve_rcpt takes one recipient of key, counted in the grant's
-- bucket p_bucket: refused when p_daily_rcpts > 0 and the window at p_now
-- holds that many. A bucket already out of the window counts nothing.
CREATE FUNCTION coord_reserve_rcpt(p_key text, p_bucket bigint, p_now bigint,
    p_daily_rcpts integer, p_width_ns bigint, p_buckets integer,
    OUT refused text, OUT retry_ns bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_expires bigint := (p_bucket + p_buckets) * p_width_ns;
BEGIN
    refused := '';
    retry_ns := 0;
    IF p_daily_rcpts > 0 THEN
        PERFORM coord_lock_key(p_key);
        SELECT d.refused, d.retry_ns INTO refused, retry_ns FROM coord_daily_refusal(p_key, p_now, true, p_daily_rcpts) d;
        IF refused <> '' THEN
            RETURN;
        END IF;
    END IF;
    IF v_expires > p_now THEN
        INSERT INTO coord_count AS c (key, bucket, expires_ns, rcpts)
        VALUES (p_key, p_bucket, v_expires, 1)
        ON CONFLICT (key, bucket) DO UPDATE SET rcpts = c.rcpts + 1;
    END IF;
END
$$;

-- coord_release gives back p_msgs messages and p_rcpts recipients counted
-- in p_bucket (never below zero), and the rate token when p_msgs is 1 and
-- the grant's arrival time p_rate_at is still ahead of p_now: the arrival
-- time moves back one emission interval, and no further back than now
-- (any earlier time means the same, a full limiter). No lock of the key is
-- needed: each change is one row's, and a reservation that reads the
-- counts just before it only refuses more. The key row, when touched,
-- comes before the count row, the order of the reservations.
CREATE FUNCTION coord_release(p_key text, p_bucket bigint, p_msgs integer,
    p_rcpts integer, p_now bigint, p_emission_ns bigint, p_rate_at bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_msgs = 1 AND p_emission_ns > 0 AND p_rate_at > p_now THEN
        UPDATE coord_key k SET tat_ns = greatest(k.tat_ns - p_emission_ns, p_now)
         WHERE k.key = p_key AND k.tat_ns > p_now;
    END IF;
    IF p_msgs > 0 OR p_rcpts > 0 THEN
        UPDATE coord_count c
           SET msgs = greatest(c.msgs - p_msgs, 0), rcpts = greatest(c.rcpts - p_rcpts, 0)
         WHERE c.key = p_key AND c.bucket = p_bucket;
    END IF;
END
$$;

-- coord_acquire_slot leases the lowest free slot below p_size of key to
-- p_owner until p_until_ns; granted is false when p_size or more leases
-- of key are live at p_now (slots above a lowered size count until they
-- are released). Under the key's lock only extensions and releases can
-- change its slot rows, so they are locked too (in slot order) before
-- they are read; no one else inserts them.
CREATE FUNCTION coord_acquire_slot(p_key text, p_owner text, p_size integer,
    p_now bigint, p_until_ns bigint, OUT got_slot integer, OUT granted boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_rows integer;
    v_live integer;
BEGIN
    PERFORM coord_lock_key(p_key);
    PERFORM 1 FROM coord_slot s WHERE s.key = p_key ORDER BY s.slot FOR UPDATE;
    SELECT count(*), count(*) FILTER (WHERE s.until_ns > p_now) INTO v_rows, v_live
      FROM coord_slot s WHERE s.key = p_key;
    got_slot := -1;
    granted := v_live < p_size;
    IF NOT granted THEN
        RETURN;
    END IF;
    -- A free slot is one without a row or with an expired lease; among
    -- the first v_rows + 1 slots below p_size there is one.
    SELECT min(n) INTO got_slot
      FROM generate_series(0, least(p_size - 1, v_rows)) AS n
     WHERE NOT EXISTS (SELECT 1 FROM coord_slot s
                        WHERE s.key = p_key AND s.slot = n AND s.until_ns > p_now);
    INSERT INTO coord_slot AS s (key, slot, owner, until_ns)
    VALUES (p_key, got_slot, p_owner, p_until_ns)
    ON CONFLICT (key, slot) DO UPDATE SET owner = excluded.owner, until_ns = excluded.until_ns;
END
$$;

-- coord_lock_owner_slots locks p_owner's slot rows in (key, slot) order
-- and returns them: rows taken over since the statement's snapshot are
-- left out (the lock re-checks the owner on their newest version).
CREATE FUNCTION coord_lock_owner_slots(p_owner text, OUT keys text[], OUT slots integer[])
LANGUAGE sql AS $$
    SELECT coalesce(array_agg(l.key), '{}'), coalesce(array_agg(l.slot), '{}')
      FROM (SELECT s.key, s.slot FROM coord_slot s WHERE s.owner = p_owner
             ORDER BY s.key, s.slot FOR UPDATE) AS l
$$;

-- coord_extend_slots renews every lease p_owner holds (expired ones too,
-- as long as nobody took them over) to p_until_ns and returns the keys of
-- those leases that another owner waits for at p_now, in order.
CREATE FUNCTION coord_extend_slots(p_owner text, p_now bigint, p_until_ns bigint)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    v_keys  text[];
    v_slots integer[];
BEGIN
    SELECT o.keys, o.slots INTO v_keys, v_slots FROM coord_lock_owner_slots(p_owner) o;
    UPDATE coord_slot s SET until_ns = p_until_ns
      FROM unnest(v_keys, v_slots) AS l(key, slot)
     WHERE s.key = l.key AND s.slot = l.slot;
    RETURN QUERY
        SELECT DISTINCT w.key FROM coord_want w
         WHERE w.key = ANY (v_keys) AND w.owner <> p_owner AND w.until_ns > p_now
         ORDER BY w.key;
END
$$;

-- coord_want_slot records that p_owner waits for a slot of key until
-- p_until_ns; of two waits of one owner the later end counts.
CREATE FUNCTION coord_want_slot(p_key text, p_owner text, p_until_ns bigint)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO coord_want AS w (key, owner, until_ns) VALUES (p_key, p_owner, p_until_ns)
    ON CONFLICT (key, owner) DO UPDATE SET until_ns = greatest(w.until_ns, excluded.until_ns)
$$;

-- coord_release_slots frees every slot p_owner holds and forgets its
-- waits: the owner restarts or stops.
CREATE FUNCTION coord_release_slots(p_owner text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_keys  text[];
    v_slots integer[];
BEGIN
    SELECT o.keys, o.slots INTO v_keys, v_slots FROM coord_lock_owner_slots(p_owner) o;
    DELETE FROM coord_slot s USING unnest(v_keys, v_slots) AS l(key, slot)
     WHERE s.key = l.key AND s.slot = l.slot;
    DELETE FROM coord_want w WHERE w.owner = p_owner;
END
$$;
