package engine

import (
	"strings"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// LikeEscape is the escape character of the LIKE patterns of a Search
// (the engines' SQL names it in ESCAPE).
const LikeEscape = `\`

// Search is a store.HistoryQuery made ready for SQL: the limit bounded,
// substrings as LIKE patterns, the Message-ID in the forms it may be
// stored in. Empty fields match everything.
type Search struct {
	store.HistoryQuery
	// FromLike, RcptLike and SubjectLike are "%substring%" with LIKE's
	// wildcards escaped; the engines fold their case in SQL.
	FromLike, RcptLike, SubjectLike string
	// HeaderIDs are the stored forms HeaderID matches: with its angle
	// brackets and without (transport.MessageID keeps the brackets of a
	// well-formed header; a malformed one may have none).
	HeaderIDs []string
}

// NormalizeSearch prepares q for an engine's SQL.
func NormalizeSearch(q store.HistoryQuery) Search {
	s := Search{HistoryQuery: q}
	switch {
	case q.Limit <= 0:
		s.Limit = store.DefaultSearchLimit
	case q.Limit > store.MaxSearchLimit:
		s.Limit = store.MaxSearchLimit
	}
	s.FromLike, s.RcptLike, s.SubjectLike = containsPattern(q.From), containsPattern(q.Rcpt), containsPattern(q.Subject)
	if id := strings.TrimSpace(q.HeaderID); id != "" {
		s.HeaderIDs = headerIDForms(id)
	}
	return s
}

// containsPattern is the LIKE pattern of a substring: its '%', '_' and
// escape characters match only themselves. "" stays "" (no condition).
func containsPattern(sub string) string {
	if sub == "" {
		return ""
	}
	r := strings.NewReplacer(LikeEscape, LikeEscape+LikeEscape, "%", LikeEscape+"%", "_", LikeEscape+"_")
	return "%" + r.Replace(sub) + "%"
}

// headerIDForms returns a Message-ID with and without its angle brackets.
func headerIDForms(id string) []string {
	bare := strings.TrimSuffix(strings.TrimPrefix(id, "<"), ">")
	if bare == "" {
		return []string{id}
	}
	return []string{"<" + bare + ">", bare}
}
