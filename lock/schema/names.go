package schema

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidName means a tier, holder or prefix name was refused before anything was written.
var ErrInvalidName = errors.New("lock: invalid name")

// DefaultPrefix is the root of all tiers' keys unless told otherwise.
const DefaultPrefix = "chef"

// MaxReason bounds the reason of an operator's change: a sentence or a ticket, not a document.
const MaxReason = 512

// MaxRevision bounds a revision's name: a git SHA is 40 bytes, a Policyfile revision_id 64.
const MaxRevision = 128

// ValidateName checks one holder name or tier part: letters, digits, '.', '_' and '-', not "."
// or "..", at most 253 bytes. what names the thing checked in the error ("holder", "tier").
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s %.40q... is longer than %d bytes", ErrInvalidName, what, name, MaxNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: %s %q is a path element", ErrInvalidName, what, name)
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			bad := fmt.Sprintf("byte 0x%02x", name[i])
			if r, size := utf8.DecodeRuneInString(name[i:]); r != utf8.RuneError || size > 1 {
				bad = fmt.Sprintf("%q", r)
			}
			return fmt.Errorf("%w: %s %q has %s at byte %d (allowed: letters, digits, '.', '_', '-')",
				ErrInvalidName, what, clip(name), bad, i)
		}
	}
	return nil
}

// ValidateTier checks a tier written as ENVIRONMENT/SERVICE.
func ValidateTier(tier string) error {
	env, svc, ok := strings.Cut(tier, "/")
	if !ok || strings.Contains(svc, "/") {
		return fmt.Errorf("%w: tier %q is not ENVIRONMENT/SERVICE", ErrInvalidName, clip(tier))
	}
	if err := ValidateName("tier environment", env); err != nil {
		return fmt.Errorf("%w (in tier %q)", err, clip(tier))
	}
	if err := ValidateName("tier service", svc); err != nil {
		return fmt.Errorf("%w (in tier %q)", err, clip(tier))
	}
	return nil
}

// ValidatePrefix checks a key prefix: one or more valid names joined by '/'.
func ValidatePrefix(prefix string) error {
	for _, part := range strings.Split(prefix, "/") {
		if err := ValidateName("prefix element", part); err != nil {
			return fmt.Errorf("%w (in prefix %q)", err, clip(prefix))
		}
	}
	return nil
}

// MaxNameLen bounds one name: long enough for any FQDN, short enough for a Consul key.
const MaxNameLen = 253

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// clip keeps error messages readable when a stored value is large.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
