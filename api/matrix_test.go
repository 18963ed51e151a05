package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/answer-relay/answer-relay/outbox"
)

// callers are the columns of the matrix: each role, no token, a bad token.
var callers = []Role{RoleOwner, RoleAdmin, RoleAgent, RoleService, "", "bad"}

// TestRoleMatrix calls every endpoint as every role, without a token and
// with an unknown token, on both stores, and checks the status, the
// problem body of every error and the Bearer challenge of every 401.
func TestRoleMatrix(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		bounced := e.accept("T-1", "R-1", "ann@customer.example")
		e.deliver(bounced.ID, outbox.OutcomeSent)
		e.recordBounce(bounced, "dsn-1")
		queued := e.accept("T-2", "R-2", "bob@customer.example")
		dl := outbox.DeadLetter{ID: outbox.DeadLetterID(outbox.EventID(queued.ID, 1), "helpdesk"), Event: queued.Events[0], Endpoint: "helpdesk", Reason: "HTTP 500", Attempts: 9, At: e.clock.Now()}
		if err := e.store.AddDeadLetter(ctx, dl); err != nil {
			t.Fatalf("AddDeadLetter: %v", err)
		}

		// Expected statuses per caller, in the order of callers.
		all := []int{200, 200, 200, 200, 401, 401}
		manage := []int{200, 200, 403, 403, 401, 401}
		public := []int{200, 200, 200, 200, 200, 200}
		cases := []struct {
			name         string
			method, path string
			body         []byte
			want         []int
		}{
			{"indicator", "GET", "/api/v1/answers/" + bounced.ID, nil, all},
			{"indicator by ref", "GET", "/api/v1/answers/by-ref/R-1", nil, all},
			{"details", "GET", "/api/v1/answers/" + bounced.ID + "/details", nil, manage},
			{"report", "GET", "/api/v1/answers/" + bounced.ID + "/report", nil, all},
			// The queued answer has nothing to resend: the role passes
			// and the state machine refuses.
			{"resend", "POST", "/api/v1/answers/" + queued.ID + "/resend", nil, []int{409, 409, 403, 403, 401, 401}},
			{"outbox", "GET", "/api/v1/outbox", nil, manage},
			{"ingest report", "POST", "/api/v1/reports", bounce("no-such-envelope", "zoe@customer.example"), []int{200, 200, 403, 200, 401, 401}},
			{"unmatched", "GET", "/api/v1/reports/unmatched", nil, manage},
			{"status code", "GET", "/api/v1/status-codes/5.1.1", nil, all},
			{"dead letters", "GET", "/api/v1/webhooks/dead-letters", nil, manage},
			// A dead letter that does not exist: the role passes, the
			// replay finds nothing.
			{"replay", "POST", "/api/v1/webhooks/dead-letters/" + url.PathEscape("nope-1/helpdesk") + "/replay", nil, []int{404, 404, 403, 403, 401, 401}},
			{"openapi", "GET", "/api/v1/openapi.yaml", nil, public},
			{"metrics", "GET", "/metrics", nil, public},
			{"healthz", "GET", "/healthz", nil, public},
			{"readyz", "GET", "/readyz", nil, public},
		}
		covered := map[string]bool{}
		for _, tc := range cases {
			for i, who := range callers {
				name := string(who)
				if name == "" {
					name = "none"
				}
				t.Run(tc.name+"/"+name, func(t *testing.T) {
					r := e.do(tc.method, tc.path, who, tc.body)
					if r.status != tc.want[i] {
						t.Fatalf("%s %s as %s: status %d, want %d; body %s", tc.method, tc.path, name, r.status, tc.want[i], r.body)
					}
					if r.status >= 400 {
						p := r.problem(t)
						if r.status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
							t.Errorf("401 without a Bearer challenge: %q", r.header.Get("WWW-Authenticate"))
						}
						if r.status == http.StatusForbidden && !strings.Contains(p.Detail, string(who)) {
							t.Errorf("403 detail does not name the role: %q", p.Detail)
						}
					}
				})
			}
			covered[tc.method+" "+routeOf(e, tc.method, tc.path)] = true
		}
		for _, r := range e.srv.Echo().Routes() {
			if !covered[r.Method+" "+r.Path] {
				t.Errorf("route %s %s is not in the matrix", r.Method, r.Path)
			}
		}
	})
}

// routeOf returns the route template echo matches for a request path.
func routeOf(e *env, method, path string) string {
	req, _ := http.NewRequest(method, path, nil)
	req.URL.RawPath = req.URL.EscapedPath()
	c := e.srv.Echo().NewContext(req, nil)
	e.srv.Echo().Router().Find(method, req.URL.RawPath, c)
	return c.Path()
}
