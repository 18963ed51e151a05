package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// Role is what a token may do (SPEC section 6).
type Role string

// The roles. Owner and admin may do everything; an agent reads the
// indicator, the delivery report and status codes; service is the
// helpdesk's back end: it ingests reports and reads what an agent reads.
const (
	RoleOwner   Role = "owner"
	RoleAdmin   Role = "admin"
	RoleAgent   Role = "agent"
	RoleService Role = "service"
)

// Roles lists every role.
var Roles = []Role{RoleOwner, RoleAdmin, RoleAgent, RoleService}

func (r Role) valid() bool { return slices.Contains(Roles, r) }

// Who may call what; the route table in server.go uses these.
var (
	rolesAll     = []Role{RoleOwner, RoleAdmin, RoleAgent, RoleService}
	rolesManage  = []Role{RoleOwner, RoleAdmin}
	rolesIngest  = []Role{RoleOwner, RoleAdmin, RoleService}
	rolesPublic  []Role // nil: no token needed
	ctxRoleKey   = "api.role"
	bearerPrefix = "bearer "
)

// credential is one configured token, kept as its SHA-256 digest so every
// comparison is over 32 bytes whatever the token's length.
type credential struct {
	digest [sha256.Size]byte
	role   Role
}

func newCredential(token string, role Role) credential {
	return credential{digest: sha256.Sum256([]byte(token)), role: role}
}

// authenticate returns the role of token, or "" if no configured token
// matches. It compares against every configured token with
// crypto/subtle and no early exit, so the time taken says nothing about
// which token, or how much of one, matched.
func authenticate(creds []credential, token string) Role {
	d := sha256.Sum256([]byte(token))
	idx := -1
	for i := range creds {
		eq := subtle.ConstantTimeCompare(d[:], creds[i].digest[:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
	}
	if idx < 0 {
		return ""
	}
	return creds[idx].role
}

// bearerToken extracts the token of an "Authorization: Bearer" header
// (RFC 6750 section 2.1; the scheme is case-insensitive).
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get(echo.HeaderAuthorization)
	if len(h) < len(bearerPrefix) || !strings.EqualFold(h[:len(bearerPrefix)], bearerPrefix) {
		return "", false
	}
	t := strings.TrimSpace(h[len(bearerPrefix):])
	return t, t != ""
}

// authorize admits a request whose bearer token has one of roles. No
// token is 401 with a Bearer challenge, an unknown token 401 with
// error="invalid_token", a known token of another role 403 with
// error="insufficient_scope" (RFC 6750 section 3.1).
func (s *Server) authorize(roles []Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token, ok := bearerToken(c.Request())
			if !ok {
				s.metrics.authFailures.WithLabelValues(authMissing).Inc()
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="answer-relay"`)
				return problemf(http.StatusUnauthorized, "unauthorized",
					"This endpoint needs an Authorization: Bearer token.")
			}
			role := authenticate(s.creds, token)
			if role == "" {
				s.metrics.authFailures.WithLabelValues(authInvalid).Inc()
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="answer-relay", error="invalid_token"`)
				return problemf(http.StatusUnauthorized, "unauthorized",
					"The bearer token is not valid.")
			}
			if !slices.Contains(roles, role) {
				s.metrics.authFailures.WithLabelValues(authForbidden).Inc()
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="answer-relay", error="insufficient_scope"`)
				return problemf(http.StatusForbidden, "forbidden",
					"The role %q may not use this endpoint; it needs one of %s.", role, joinRoles(roles))
			}
			c.Set(ctxRoleKey, role)
			return next(c)
		}
	}
}

func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}
