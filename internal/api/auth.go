package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/config"
)

// Scope is what a caller may read: every room, or the listed ones.
type Scope struct {
	Name  string      // the token's name ("anonymous" without one)
	All   bool        // every room
	Rooms []id.RoomID // when not All, sorted
}

// Allows reports whether the scope covers room.
func (s Scope) Allows(room id.RoomID) bool {
	if s.All {
		return true
	}
	_, ok := slices.BinarySearch(s.Rooms, room)
	return ok
}

type token struct {
	hash  [32]byte
	scope Scope
}

// Authenticator checks bearer tokens. Tokens are compared by their SHA-256
// in constant time, so neither the comparison's duration nor a timing of
// the map lookup tells a caller how much of a guess was right.
type Authenticator struct {
	tokens    []token
	anonymous bool
}

// NewAuthenticator reads every token file of c; all unreadable files are
// reported together.
func NewAuthenticator(c AuthConfig) (*Authenticator, error) {
	a := &Authenticator{anonymous: c.AllowAnonymous}
	var errs []string
	seen := map[[32]byte]string{}
	for _, tc := range c.Tokens {
		secret, err := config.ReadSecretFile(tc.File)
		if err != nil {
			errs = append(errs, fmt.Sprintf("token %s: %v", tc.Name, err))
			continue
		}
		h := sha256.Sum256([]byte(secret))
		if other, dup := seen[h]; dup {
			errs = append(errs, fmt.Sprintf("token %s: same secret as token %s", tc.Name, other))
			continue
		}
		seen[h] = tc.Name
		s := Scope{Name: tc.Name, All: len(tc.Rooms) == 0}
		for _, r := range tc.Rooms {
			s.Rooms = append(s.Rooms, id.RoomID(r))
		}
		slices.Sort(s.Rooms)
		a.tokens = append(a.tokens, token{hash: h, scope: s})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("auth: %s", strings.Join(errs, "; "))
	}
	return a, nil
}

// bearer extracts the token of a request: the Authorization header, or the
// access_token query parameter (a browser's EventSource cannot set headers).
func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// Authenticate returns the scope of the request's token. ok is false for a
// wrong token, or none when anonymous access is off.
func (a *Authenticator) Authenticate(r *http.Request) (Scope, bool) {
	tok := bearer(r)
	if tok == "" {
		if a.anonymous && r.Header.Get("Authorization") == "" {
			return Scope{Name: "anonymous", All: true}, true
		}
		return Scope{}, false
	}
	h := sha256.Sum256([]byte(tok))
	var found *Scope
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(h[:], a.tokens[i].hash[:]) == 1 {
			found = &a.tokens[i].scope
		}
	}
	if found == nil {
		return Scope{}, false
	}
	return *found, true
}
