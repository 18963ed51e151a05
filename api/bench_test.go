package api

import (
	"testing"

	"github.com/answer-relay/answer-relay/internal/config"
)

// BenchmarkIndicator measures GET /api/v1/answers/{id} over loopback HTTP
// with an agent token, per store engine: the request the helpdesk's UI
// makes most.
func BenchmarkIndicator(b *testing.B) {
	for _, eng := range engines {
		b.Run(eng.name, func(b *testing.B) {
			e := newEnv(b, eng, nil)
			a := e.accept("T-1", "R-1", "ann@customer.example")
			path := "/api/v1/answers/" + a.ID
			b.ResetTimer()
			for b.Loop() {
				if r := e.do("GET", path, RoleAgent, nil); r.status != 200 {
					b.Fatalf("status %d", r.status)
				}
			}
		})
	}
}

// BenchmarkAuthenticate measures the constant-time token check against 50
// configured tokens.
func BenchmarkAuthenticate(b *testing.B) {
	var tokens []config.Secret
	for i := range 50 {
		tokens = append(tokens, config.Secret("token-number-"+string(rune('a'+i%26))+string(rune('a'+i/26))+"-0123456789:agent"))
	}
	creds, err := parseTokens(tokens)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		authenticate(creds, "token-number-zz-0123456789")
	}
}
