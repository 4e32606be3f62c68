// Package envfile reads files of NAME=value lines as systemd's EnvironmentFile= reads them
// (src/basic/env-file.c), so that a program reading its unit's settings file itself makes
// of every line what systemd makes of it.
//
// The grammar, as systemd has it: a line whose first non-blank character is # or ; is a
// comment; blank lines are skipped; the name runs to the first =, blanks around it dropped;
// blanks after = are skipped. A value is made of parts, concatenated: bare text, where \
// takes the next character literally (\ before a newline joins the lines) and trailing blanks
// are dropped; '...', taken literally; and "...", where \ escapes only " \ ` $ and the newline
// (before any other character it stays), quotes which may span lines. Nothing is expanded. Of
// a name given twice the last wins.
//
// Parse is stricter than systemd in one way: what systemd would read without setting anything
// (a line without =, a name that is not a variable name, the rest of a file after a NUL byte),
// what it would refuse the whole file for (invalid UTF-8), and what different systemd versions
// read differently (a line after a comment ending in \), are errors naming the line. An error
// never quotes the line: it may hold a secret.
package envfile

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Var is one assignment of the file.
type Var struct {
	Name, Value string
	Line        int // the line its name is on, from 1
}

// LineError is a line Parse refuses.
type LineError struct {
	Line   int
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("%d: %s", e.Line, e.Reason) }

const (
	whitespace = " \t\n\r"
	newline    = "\n\r"
	comments   = "#;"
	// shellNeedEscape is what \ escapes inside double quotes.
	shellNeedEscape = "\"\\`$"
)

// Parse returns the assignments of text in their order (duplicates included; see Last).
func Parse(text string) ([]Var, error) {
	if i := strings.IndexByte(text, 0); i >= 0 {
		return nil, &LineError{Line: 1 + strings.Count(text[:i], "\n"), Reason: "a NUL byte (systemd ignores the rest of the file)"}
	}
	const (
		preKey = iota
		key
		preValue
		value
		valueEscape
		singleQuote
		doubleQuote
		doubleQuoteEscape
		comment
		commentEscape
	)
	var (
		vars     []Var
		k, v     strings.Builder
		state    = preKey
		line     = 1 // of the character at hand
		keyLine  = 0
		lastKeyW = -1 // where the name's trailing blanks start, -1 when none
		lastValW = -1 // where the value's trailing blanks start (bare parts only)
		// escapedComment: the previous line was a comment ending in \, which systemd before
		// 254 continues onto this line and later ones do not.
		escapedComment = false
	)
	push := func(trim bool) error {
		name := k.String()
		if lastKeyW >= 0 {
			name = name[:lastKeyW]
		}
		val := v.String()
		if trim && lastValW >= 0 {
			val = val[:lastValW]
		}
		k.Reset()
		v.Reset()
		if !utf8.ValidString(name) || !utf8.ValidString(val) {
			return &LineError{Line: keyLine, Reason: "invalid UTF-8 (systemd refuses the whole file)"}
		}
		if !ValidName(name) {
			return &LineError{Line: keyLine, Reason: "not a variable name: letters, digits and _, not starting with a digit (systemd ignores the line)"}
		}
		vars = append(vars, Var{Name: name, Value: val, Line: keyLine})
		return nil
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch state {
		case preKey:
			switch {
			case strings.IndexByte(comments, c) >= 0:
				state = comment
				escapedComment = false
			case strings.IndexByte(newline, c) >= 0:
				escapedComment = false
			case strings.IndexByte(whitespace, c) < 0:
				if escapedComment {
					return nil, &LineError{Line: line, Reason: "follows a comment ending in \\: systemd before 254 reads it as part of the comment, later ones as a setting"}
				}
				state, keyLine, lastKeyW = key, line, -1
				k.WriteByte(c)
			}
		case key:
			switch {
			case strings.IndexByte(newline, c) >= 0:
				return nil, &LineError{Line: keyLine, Reason: "want NAME=value (systemd ignores a line without =)"}
			case c == '=':
				state, lastValW = preValue, -1
			default:
				if strings.IndexByte(whitespace, c) < 0 {
					lastKeyW = -1
				} else if lastKeyW < 0 {
					lastKeyW = k.Len()
				}
				k.WriteByte(c)
			}
		case preValue:
			switch {
			case strings.IndexByte(newline, c) >= 0:
				if err := push(false); err != nil {
					return nil, err
				}
				state = preKey
			case c == '\'':
				state = singleQuote
			case c == '"':
				state = doubleQuote
			case c == '\\':
				state = valueEscape
			case strings.IndexByte(whitespace, c) < 0:
				state = value
				v.WriteByte(c)
			}
		case value:
			switch {
			case strings.IndexByte(newline, c) >= 0:
				if err := push(true); err != nil {
					return nil, err
				}
				state = preKey
			case c == '\\':
				state, lastValW = valueEscape, -1
			default:
				if strings.IndexByte(whitespace, c) < 0 {
					lastValW = -1
				} else if lastValW < 0 {
					lastValW = v.Len()
				}
				v.WriteByte(c)
			}
		case valueEscape:
			// An escaped newline joins the lines: it is dropped.
			state = value
			if strings.IndexByte(newline, c) < 0 {
				v.WriteByte(c)
			}
		case singleQuote:
			if c == '\'' {
				state = preValue
			} else {
				v.WriteByte(c)
			}
		case doubleQuote:
			switch c {
			case '"':
				state = preValue
			case '\\':
				state = doubleQuoteEscape
			default:
				v.WriteByte(c)
			}
		case doubleQuoteEscape:
			state = doubleQuote
			switch {
			case strings.IndexByte(shellNeedEscape, c) >= 0:
				v.WriteByte(c)
			case c != '\n':
				v.WriteByte('\\')
				v.WriteByte(c)
			}
		case comment:
			switch {
			case c == '\\':
				state = commentEscape
			case strings.IndexByte(newline, c) >= 0:
				state = preKey
			}
		case commentEscape:
			if strings.IndexByte(newline, c) >= 0 {
				state, escapedComment = preKey, true
			} else {
				state = comment
			}
		}
		if c == '\n' {
			line++
		}
	}
	switch state {
	case key:
		return nil, &LineError{Line: keyLine, Reason: "want NAME=value (systemd ignores a line without =)"}
	case preValue, value, valueEscape, singleQuote, doubleQuote, doubleQuoteEscape:
		// An unterminated quote runs to the end of the file, as it does for systemd.
		if err := push(state == value); err != nil {
			return nil, err
		}
	}
	return vars, nil
}

// ValidName reports whether name is a variable name systemd sets: letters, digits and _, not
// starting with a digit.
func ValidName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Last is vars as an environment: of a name given twice, the last value.
func Last(vars []Var) map[string]string {
	env := make(map[string]string, len(vars))
	for _, v := range vars {
		env[v.Name] = v.Value
	}
	return env
}
