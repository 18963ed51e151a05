// Package config holds the types shared by every package's Config struct
// and, in cmd/answer-relay, the loader that fills them from a file, the
// environment and flags (flag > env > file).
package config

// Secret is a configuration value that must never be printed: it formats,
// marshals and logs as "<redacted>". Reveal returns the value itself.
type Secret string

const redacted = "<redacted>"

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer, so %#v redacts too.
func (s Secret) GoString() string { return s.String() }

// MarshalText implements encoding.TextMarshaler (JSON, YAML, slog).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret value, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }
