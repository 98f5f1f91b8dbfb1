package events

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// EmptyToken stands for the empty string, which is not a valid subject token.
const EmptyToken = "_"

// ErrBadToken is returned by ParseToken for a string that Token cannot produce.
var ErrBadToken = errors.New("invalid token")

// Token encodes a Matrix-derived string (room id, application, call id, ...)
// as one NATS subject token or KV key part. Matrix identifiers contain '.',
// ':', '+', '/' and more, none of which may appear in a token unescaped;
// base64url without padding uses only [A-Za-z0-9_-], is reversible and needs
// no escaping table. The empty string becomes "_", which base64 never yields
// on its own (a one-character token cannot be valid unpadded base64).
func Token(s string) string {
	if s == "" {
		return EmptyToken
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// ParseToken is the inverse of Token.
func ParseToken(tok string) (string, error) {
	if tok == EmptyToken {
		return "", nil
	}
	if tok == "" {
		return "", fmt.Errorf("%w: empty", ErrBadToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrBadToken, tok, err)
	}
	if len(b) == 0 {
		return "", fmt.Errorf("%w %q: decodes to nothing", ErrBadToken, tok)
	}
	return string(b), nil
}
