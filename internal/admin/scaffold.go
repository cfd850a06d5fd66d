package admin

import "time"

// TEMPORARY: the old behaviour behind the new names, for the red run.

const DefaultSearchTimeout = 10 * time.Second

const maxSearches = 2
