package dsn

import (
	"strings"
	"testing"
)

// The phrase index answers "no phrase" at once for a text without any
// piece of three bytes or more (match.any); that is right only when every
// phrase has such a piece.
func TestPhrasesHaveLongPiece(t *testing.T) {
	check := func(where, p string) {
		for _, piece := range strings.Split(p, "*") {
			if len(piece) >= 3 {
				return
			}
		}
		t.Errorf("%s: %q has no piece of three bytes or more", where, p)
	}
	for r, ps := range phrases {
		for _, p := range ps {
			check(r, p)
		}
	}
	for _, v := range vendorPhrases {
		check("vendor", v.phrase)
	}
	for _, s := range servicePhrases {
		check("service", s.phrase)
	}
	for _, c := range commandPhrases {
		check("command", c.phrase)
	}
}

// The index finds what a plain substring search finds.
func TestMatchAgreesWithContains(t *testing.T) {
	texts := []string{
		"550 5.1.1 <a@example.com>: recipient address rejected: user unknown in local recipient table",
		"452 4.2.2 mailbox full", "554 5.7.1 service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org",
		"host mx.example.org said: 550 no such user here (in reply to rcpt to command)", "", "ab", "<>",
	}
	for _, d := range texts {
		m := newMatch(d)
		for reason, ps := range phrases {
			want := false
			for _, p := range ps {
				if matchPhrase(d, p) {
					want = true
				}
			}
			if reason == ReasonRejected && want {
				for _, n := range rejectedNot {
					if strings.Contains(d, n) {
						want = false
					}
				}
			}
			if got := m.has(reason); got != want {
				t.Errorf("%q: has(%s) = %v, want %v", d, reason, got, want)
			}
		}
	}
}
