package sqlite

import (
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// Bodies are sealed as package engine describes: one data key per commit
// batch, its wrapped form in a row of data_keys that each chunk refers to.

// ensureKey draws the batch's data key and stores its wrapped form, once
// per batch and outside any request's savepoint (a request that fails
// must not take the key row of the others with it). A failure is kept for
// the rest of the batch.
func (b *batch) ensureKey() error {
	sealer := b.w.s.sealer
	if sealer == nil || b.key != nil {
		return nil
	}
	if b.keyErr != nil {
		return b.keyErr
	}
	var key engine.DrawnKey
	var err error
	if b.drawn != nil {
		key = *b.drawn
	} else {
		key, err = engine.DrawKey(sealer)
	}
	if err != nil {
		b.w.s.log.Error("cannot seal bodies: messages are refused", "error", err)
		b.keyErr = err
		return err
	}
	err = b.queryRow(`INSERT INTO data_keys (wrapped) VALUES (?) RETURNING id`, key.Wrapped).Scan(&key.ID)
	if err != nil {
		return b.fail(err)
	}
	b.key = &key.SealKey
	return nil
}

// predraw draws the batch's data key before its transaction begins when
// a request of the batch stores a body: drawing may wait on Vault, and
// the write lock (other writers, `oauthrelay queue`, the health check's
// Ping) must not wait with it.
func (b *batch) predraw(reqs []*request) {
	if b.w.s.sealer == nil {
		return
	}
	for _, r := range reqs {
		if r.bodies {
			key, err := engine.DrawKey(b.w.s.sealer)
			if err != nil {
				b.w.s.log.Error("cannot seal bodies: messages are refused", "error", err)
				b.keyErr = err
				return
			}
			b.drawn = &key
			return
		}
	}
}
