package dendritetest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// WriteRegistration writes an appservice registration for the ingest into
// a temporary directory of t and returns its path (for Options.Appservices):
// every room's events (rooms namespace .*) pushed to url with hsToken; the
// homeserver accepts asToken from the ingest (reconciliation).
func WriteRegistration(t testing.TB, name, url, asToken, hsToken string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+"-registration.yaml")
	yaml := fmt.Sprintf(`id: rtc-sessions
url: %q
as_token: %q
hs_token: %q
sender_localpart: rtcwatch
rate_limited: false
namespaces:
  users: [{exclusive: true, regex: '@rtcwatch_.*'}]
  rooms: [{exclusive: false, regex: '.*'}]
  aliases: []
`, url, asToken, hsToken)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatalf("dendritetest: %v", err)
	}
	return path
}

// RandomToken is a random appservice token (32 hex digits).
func RandomToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("dendritetest: %v", err)
	}
	return hex.EncodeToString(b)
}
