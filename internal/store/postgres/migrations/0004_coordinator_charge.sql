-- Recovery after an outage of the shared database (README "Failure
-- modes"): while the database is unreachable every instance sends on its
-- own share of each limit and opens connections on its share of each
-- cap; once it is back, what the instance sent is charged to the shared
-- counts (coord_charge) and the connections it opened get leases
-- (coord_adopt_slots). Both lock the key as the reservations do
-- (0002_coordinator.sql says why that is atomic and free of deadlocks)
-- and depend on nothing but that migration.

-- coord_charge adds p_msgs[i] messages and p_rcpts[i] recipients to
-- key's bucket p_buckets[i] (buckets out of the window at p_now count
-- nothing; a bucket named twice counts both) and moves the rate limiter
-- p_rate_debt_ns further ahead (p_emission_ns > 0), never past empty —
-- p_burst intervals ahead of p_now — and never back. It never refuses:
-- the messages were sent.
CREATE FUNCTION coord_charge(p_key text, p_buckets bigint[], p_msgs integer[],
    p_rcpts integer[], p_now bigint, p_emission_ns bigint, p_burst integer,
    p_rate_debt_ns bigint, p_width_ns bigint, p_nbuckets integer)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_tat bigint := coord_lock_key(p_key);
BEGIN
    IF p_emission_ns > 0 AND p_rate_debt_ns > 0 THEN
        UPDATE coord_key k
           SET tat_ns = greatest(v_tat, least(greatest(v_tat, p_now) + p_rate_debt_ns,
                                              p_now + p_burst::bigint * p_emission_ns))
         WHERE k.key = p_key;
    END IF;
    INSERT INTO coord_count AS c (key, bucket, expires_ns, msgs, rcpts)
    SELECT p_key, b.bucket, (b.bucket + p_nbuckets) * p_width_ns, sum(b.msgs), sum(b.rcpts)
      FROM unnest(p_buckets, p_msgs, p_rcpts) AS b(bucket, msgs, rcpts)
     WHERE (b.bucket + p_nbuckets) * p_width_ns > p_now
     GROUP BY b.bucket
    HAVING sum(b.msgs) > 0 OR sum(b.rcpts) > 0
    ON CONFLICT (key, bucket) DO UPDATE SET msgs = c.msgs + excluded.msgs, rcpts = c.rcpts + excluded.rcpts;
END
$$;

-- coord_adopt_slots makes p_owner hold exactly p_n slots of key until
-- p_until_ns and returns them: it keeps the lowest p_n of its rows
-- (renewed, expired ones too: nobody took them over, or they would be
-- another owner's), deletes the others, and inserts or takes over the
-- lowest free slots (no row, or an expired lease) for what is missing,
-- whatever the cap: the connections are open. Under the key's lock, as
-- in coord_acquire_slot, the key's slot rows are locked in slot order
-- before they are read.
CREATE FUNCTION coord_adopt_slots(p_key text, p_owner text, p_n integer,
    p_now bigint, p_until_ns bigint)
RETURNS SETOF integer
LANGUAGE plpgsql AS $$
DECLARE
    v_keep integer[];
    v_rows integer;
    v_need integer;
BEGIN
    PERFORM coord_lock_key(p_key);
    PERFORM 1 FROM coord_slot s WHERE s.key = p_key ORDER BY s.slot FOR UPDATE;
    SELECT coalesce(array_agg(o.slot ORDER BY o.slot), '{}') INTO v_keep
      FROM (SELECT s.slot FROM coord_slot s WHERE s.key = p_key AND s.owner = p_owner
             ORDER BY s.slot LIMIT greatest(p_n, 0)) AS o;
    DELETE FROM coord_slot s WHERE s.key = p_key AND s.owner = p_owner AND s.slot <> ALL (v_keep);
    UPDATE coord_slot s SET until_ns = p_until_ns WHERE s.key = p_key AND s.slot = ANY (v_keep);
    v_need := greatest(p_n, 0) - cardinality(v_keep);
    IF v_need > 0 THEN
        -- Among the first rows + need slot numbers, at most rows are live.
        SELECT count(*) INTO v_rows FROM coord_slot s WHERE s.key = p_key;
        INSERT INTO coord_slot AS s (key, slot, owner, until_ns)
        SELECT p_key, f.n, p_owner, p_until_ns
          FROM (SELECT n FROM generate_series(0, v_rows + v_need - 1) AS n
                 WHERE NOT EXISTS (SELECT 1 FROM coord_slot l
                                    WHERE l.key = p_key AND l.slot = n AND l.until_ns > p_now)
                 ORDER BY n LIMIT v_need) AS f
        ON CONFLICT (key, slot) DO UPDATE SET owner = excluded.owner, until_ns = excluded.until_ns;
    END IF;
    RETURN QUERY SELECT s.slot FROM coord_slot s WHERE s.key = p_key AND s.owner = p_owner ORDER BY s.slot;
END
$$;
