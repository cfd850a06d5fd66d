package sqlite

import "time"

// Writers of two processes (the relay and an `oauthrelay queue` command)
// take turns. SQLite does not queue them: a writer that finds the write
// lock taken polls for it, and a busy relay, which begins its next
// transaction microseconds after each commit, would keep an operator's
// command waiting until it timed out. So a writer that has to wait
// announces it (a shared lock on the file TurnFileName), and a writer
// about to begin a transaction first lets an announced one go.

// TurnFileName is the file beside the database through which writers of
// different processes take turns.
const TurnFileName = FileName + "-turn"

const (
	// yieldLimit bounds how long a writer lets others go first, so that
	// one that waits for something else cannot stall it.
	yieldLimit = 50 * time.Millisecond
	yieldPoll  = 200 * time.Microsecond
	// beginPollMax is the longest pause between two attempts to take the
	// write lock.
	beginPollMax = 5 * time.Millisecond
)

// yield waits, up to yieldLimit, while another writer waits.
func (t *turnstile) yield() {
	for deadline := time.Now().Add(yieldLimit); t.othersWaiting() && time.Now().Before(deadline); {
		time.Sleep(yieldPoll)
	}
}
