package postgres

import (
	"fmt"
	"strings"
)

// splitStatements cuts a migration's SQL into its statements, for a step
// that runs them one at a time (engine.Migration.NoTransaction): at each
// semicolon outside a string ('…', E'…'), a quoted identifier ("…"), a
// dollar-quoted body ($$…$$, $tag$…$tag$) or a comment (--, nested
// /* */). Each statement is returned from its first character that is
// not blank or comment, without its semicolon; a part holding no
// statement is left out. Unterminated quotes and comments are errors.
func splitStatements(sql string) ([]string, error) {
	var out []string
	start := -1 // where the current statement's code starts
	for i := 0; i < len(sql); {
		end, code, err := skipToken(sql, i)
		if err != nil {
			return nil, err
		}
		switch {
		case sql[i] == ';':
			if start >= 0 {
				out = append(out, strings.TrimSpace(sql[start:i]))
			}
			start = -1
		case code && start < 0:
			start = i
		}
		i = end
	}
	if start >= 0 {
		out = append(out, strings.TrimSpace(sql[start:]))
	}
	return out, nil
}

// skipToken returns the end of the token at sql[i]: a quoted string,
// identifier or body, a comment, or one byte; code is false for a comment
// or a blank.
func skipToken(sql string, i int) (end int, code bool, err error) {
	rest := sql[i:]
	switch {
	case strings.HasPrefix(rest, "--"):
		if n := strings.IndexByte(rest, '\n'); n >= 0 {
			return i + n + 1, false, nil
		}
		return len(sql), false, nil
	case strings.HasPrefix(rest, "/*"):
		return skipBlockComment(sql, i)
	case rest[0] == '\'':
		escapes := i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i == 1 || !isIdentByte(sql[i-2]))
		end, err := skipQuoted(sql, i, '\'', escapes)
		return end, true, err
	case rest[0] == '"':
		end, err := skipQuoted(sql, i, '"', false)
		return end, true, err
	case rest[0] == '$':
		if tag, ok := dollarTag(rest); ok && (i == 0 || !isIdentByte(sql[i-1])) {
			n := strings.Index(rest[len(tag):], tag)
			if n < 0 {
				return 0, false, fmt.Errorf("store: migration SQL: %s not closed", tag)
			}
			return i + len(tag) + n + len(tag), true, nil
		}
	case rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\n' || rest[0] == '\r':
		return i + 1, false, nil
	}
	return i + 1, true, nil
}

// skipBlockComment returns the end of the comment at sql[i]; PostgreSQL's
// block comments nest.
func skipBlockComment(sql string, i int) (int, bool, error) {
	depth := 0
	for j := i; j+1 < len(sql); j++ {
		switch sql[j : j+2] {
		case "/*":
			depth++
			j++
		case "*/":
			depth--
			j++
			if depth == 0 {
				return j + 1, false, nil
			}
		}
	}
	return 0, false, fmt.Errorf("store: migration SQL: /* not closed")
}

// skipQuoted returns the end of the string or identifier quoted by q at
// sql[i]; a doubled quote stands for one, and with escapes so does a
// backslash before any character.
func skipQuoted(sql string, i int, q byte, escapes bool) (int, error) {
	for j := i + 1; j < len(sql); j++ {
		switch {
		case escapes && sql[j] == '\\':
			j++
		case sql[j] == q && j+1 < len(sql) && sql[j+1] == q:
			j++
		case sql[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("store: migration SQL: %c not closed", q)
}

// dollarTag returns the opening $tag$ (or $$) at the start of s; a $ then
// a digit is a parameter, not a tag.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '$':
			return s[:j+1], true
		case !isIdentByte(c) || j == 1 && c >= '0' && c <= '9':
			return "", false
		}
	}
	return "", false
}

// isIdentByte reports a byte of an unquoted identifier (ASCII letters,
// digits, _, and any byte of a non-ASCII character).
func isIdentByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}
