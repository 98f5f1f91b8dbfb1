package rtcctl

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestExplained: errors the server gives for a wrong setup (no JetStream,
// a refused login) come with what to check.
func TestExplained(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: "u", Password: "right"}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"sessions", "--user", "u", "--password", "right"}, []string{"hint: JetStream is not enabled"}},
		{[]string{"sessions", "--user", "u", "--password", "wrong"}, []string{"authorization violation", `hint: the server refused user "u"`}},
	}
	for _, tc := range tests {
		start := time.Now()
		code, out, errs := run(t, append(tc.args, "-s", ns.ClientURL(), "--timeout", "5s")...)
		if code != 1 || out != "" || time.Since(start) > 3*time.Second {
			t.Errorf("%v: exit %d after %s\n%s%s", tc.args, code, time.Since(start), out, errs)
		}
		for _, w := range tc.want {
			if !strings.Contains(strings.ToLower(errs), strings.ToLower(w)) {
				t.Errorf("%v: stderr lacks %q:\n%s", tc.args, w, errs)
			}
		}
	}
}
