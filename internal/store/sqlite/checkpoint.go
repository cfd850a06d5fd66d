package sqlite

import (
	"context"

	sqlite "modernc.org/sqlite"
)

// SQLite checkpoints the WAL into the database file inside the COMMIT that
// makes the WAL pass wal_autocheckpoint pages, so the callers of that
// batch waited for the copy and the database file's fsync too (14% of the
// writer's time in the store benchmark). The writer's connection has
// automatic checkpoints off and runs them itself after it has answered
// the batch: the copy delays only the next batch, which meanwhile grows
// and so shares its fsync among more messages.
//
// The checkpoint stays on the writer's connection, between its
// transactions: a checkpoint that finishes with no writer active lets the
// next transaction start the WAL over from its beginning
// (https://www.sqlite.org/wal.html#ckpt). One running beside the writer on
// another connection never finds the WAL complete, and the WAL grew
// without bound in a trial (480 MB in two seconds).

// checkpointPages is how many pages the writer adds to the WAL between
// checkpoints, SQLite's own default for wal_autocheckpoint.
const checkpointPages = 1000

// afterCommit counts the pages the last transaction wrote to the WAL and
// checkpoints when they add up to checkpointPages. A failure is only
// logged: the WAL keeps the pages (nothing is lost) and the next
// checkpoint tries again.
func (w *writer) afterCommit() {
	n := w.pagesWritten()
	w.s.walPagesWritten.Add(uint64(n))
	w.walPages += n
	if w.walPages < checkpointPages {
		return
	}
	// Counted again from zero only when the checkpoint copied the whole
	// WAL; one a reader held back is tried after the next commit, as
	// SQLite's own automatic checkpoint would be.
	if w.checkpoint("PASSIVE") {
		w.walPages = 0
	}
}

// pagesWritten returns the pages the writer's connection wrote since the
// last call (SQLITE_DBSTATUS_CACHE_WRITE); when the driver cannot tell, a
// guess that checkpoints every hundred commits.
func (w *writer) pagesWritten() int {
	n := checkpointPages / 100
	_ = w.conn.Raw(func(dc any) error {
		if st, ok := dc.(sqlite.DBStatus); ok {
			if cur, _, err := st.Status(sqlite.DBStatusCacheWrite, true); err == nil {
				n = cur
			}
		}
		return nil
	})
	return n
}

// checkpoint runs one checkpoint on the writer's connection and reports
// whether it copied the whole WAL.
func (w *writer) checkpoint(mode string) bool {
	if w.conn == nil {
		return false
	}
	var busy, logFrames, done int
	err := w.conn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &done)
	if err != nil {
		_ = w.connErr("checkpointing", err)
		w.s.log.Warn("WAL checkpoint failed; the next one tries again", "error", err)
		return false
	}
	return busy == 0 && done == logFrames
}
