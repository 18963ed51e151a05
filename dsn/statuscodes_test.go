package dsn

import "testing"

func TestStatusText(t *testing.T) {
	tests := []struct {
		name, code, want string
		ok               bool
	}{
		{"known permanent", "5.1.1", "Bad destination mailbox address", true},
		{"known transient", "4.2.2", "Mailbox full", true},
		{"known success", "2.1.5", "Destination address valid", true},
		{"two-digit detail", "5.7.26", "Multiple authentication checks failed", true},
		{"unknown detail", "4.2.99", "Persistent transient failure: mailbox status", true},
		{"unknown subject", "5.9.1", "Permanent failure: undefined subject", true},
		{"spaces trimmed", " 5.0.0 ", "Other undefined status", true},
		{"bad class", "3.1.1", "", false},
		{"two parts", "5.1", "", false},
		{"letters", "5.a.1", "", false},
		{"too long", "5.1.1234", "", false},
		{"empty", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := StatusText(tt.code)
			if got != tt.want || ok != tt.ok {
				t.Errorf("StatusText(%q) = %q, %v; want %q, %v", tt.code, got, ok, tt.want, tt.ok)
			}
		})
	}
	for _, c := range StatusCodes {
		if _, ok := StatusText("5" + c.Code[1:]); !ok {
			t.Errorf("table entry %s does not parse", c.Code)
		}
	}
}
