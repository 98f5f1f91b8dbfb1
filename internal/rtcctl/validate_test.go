package rtcctl

import (
	"strings"
	"testing"
	"time"
)

// TestRoomIDsChecked: every command that takes a room refuses what is no
// room id the same way, at once, with the reason and exit status 2 (tail
// used to follow a room that cannot exist, forever). Nothing listens at the
// server address: the check comes before any connection.
func TestRoomIDsChecked(t *testing.T) {
	commands := [][]string{
		{"tail", "--room"},
		{"sessions", "--room"},
		{"room"},
		{"reconcile"},
		{"token"},
	}
	bad := []struct {
		room, want string
	}{
		{"gaming", `"gaming" is not a room id: a room id starts with '!'`},
		{"#gaming:hs1.test", `"#gaming:hs1.test" is a room alias, not a room id`},
		{"!:hs1.test", `nothing between '!' and ':'`},
		{"!abc:", `no server name after ':'`},
		{"!" + strings.Repeat("a", 300) + ":hs", "more than Matrix allows"},
	}
	for _, cmd := range commands {
		for _, b := range bad {
			args := append(append([]string{}, cmd...), b.room, "-s", "nats://127.0.0.1:1")
			t.Run(strings.Join(cmd, " ")+" "+b.room[:min(len(b.room), 20)], func(t *testing.T) {
				start := time.Now()
				code, out, errs := run(t, args...)
				if code != 2 || out != "" || !strings.Contains(errs, b.want) {
					t.Fatalf("exit %d, want 2 and %q on stderr\nstdout %q\nstderr %s", code, b.want, out, errs)
				}
				if took := time.Since(start); took > time.Second {
					t.Fatalf("took %s", took)
				}
			})
		}
	}
	for _, ok := range []string{"!a:hs1.test", "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM", "!x:[::1]:8448"} {
		if err := CheckRoomID(ok); err != nil {
			t.Errorf("CheckRoomID(%q): %v", ok, err)
		}
	}
}

func TestCheckUserID(t *testing.T) {
	for _, tc := range []struct {
		id, err string
	}{
		{"@alice:hs1.test", ""},
		{"alice", "not a user id"},
		{"@alice", "not a user id"},
		{"@:hs", "not a user id"},
		{"@a:" + strings.Repeat("h", 300), "more than Matrix allows"},
	} {
		err := CheckUserID(tc.id)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("CheckUserID(%q) = %v, want %q", tc.id, err, tc.err)
		}
	}
}
