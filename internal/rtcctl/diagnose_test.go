package rtcctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestNotNATS: a URL where no NATS server listens is reported at once, with
// what is there instead, not after --timeout as an i/o timeout.
func TestNotNATS(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") }))
	defer web.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()

	chatty, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer chatty.Close()
	go func() {
		for {
			c, err := chatty.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
			c.Close()
		}
	}()

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "nats://" + closed.Addr().String()
	closed.Close()

	tests := []struct {
		name, url string
		want      []string
		within    time.Duration
	}{
		{"an HTTP port", "nats://" + strings.TrimPrefix(web.URL, "http://"),
			[]string{"nothing speaking NATS at nats://" + strings.TrimPrefix(web.URL, "http://"), "an HTTP server answered", "is this the HTTP port?"}, 3 * time.Second},
		{"an HTTP port, no scheme", strings.TrimPrefix(web.URL, "http://"), []string{"nothing speaking NATS", "an HTTP server answered"}, 3 * time.Second},
		{"a silent port", "nats://" + silent.Addr().String(), []string{"nothing speaking NATS", "no NATS greeting within 2s (--timeout)"}, 3 * time.Second},
		{"another protocol", "nats://" + chatty.Addr().String(), []string{"nothing speaking NATS", `it sent "SSH-2"`}, 2 * time.Second},
		{"connection refused", refusedURL, []string{"connect to nats " + refusedURL + ": connection refused", "is nats-server running"}, time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			timeout := "10s"
			if tc.name == "a silent port" {
				timeout = "2s"
			}
			code, out, errs := run(t, "sessions", "-s", tc.url, "--timeout", timeout)
			took := time.Since(start)
			if code != 1 || out != "" {
				t.Fatalf("exit %d, want 1\nstdout %q\nstderr %s", code, out, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
			if strings.Contains(errs, "i/o timeout") || took > tc.within {
				t.Errorf("took %s (want under %s), stderr:\n%s", took, tc.within, errs)
			}
		})
	}

	// A real NATS server passes the probe; one of several URLs suffices.
	url, _ := embedded(t)
	if code, out, errs := run(t, "sessions", "-s", refusedURL+","+url); code != 0 || !strings.Contains(out, "no live sessions") {
		t.Errorf("a NATS server among the URLs: exit %d\n%s%s", code, out, errs)
	}
}

func TestParseViolation(t *testing.T) {
	perm := func(s string) error { return fmt.Errorf("%w: %s", nats.ErrPermissionViolation, s) }
	tests := []struct {
		name, inbox string
		err         error
		want        *PermissionError // nil: not a violation
	}{
		{"not one", "", errors.New("nats: timeout"), nil},
		{"default inbox refused", "", perm(`Permissions Violation for Subscription to "_INBOX.abc.*"`),
			&PermissionError{Op: "subscribe", Subject: "_INBOX.abc.*", Hint: "replies come to _INBOX.>, which this user may not receive: give the user's inbox prefix with --inbox-prefix (the shipped operator's is _INBOX_operator, see docs/nats.md)"}},
		{"own inbox refused", "_INBOX_me", perm(`Permissions Violation for Subscription to "_INBOX_me.abc.*"`),
			&PermissionError{Op: "subscribe", Subject: "_INBOX_me.abc.*", Hint: "replies come to _INBOX_me.>, which this user may not receive: check --inbox-prefix against the user's permissions"}},
		{"an operator command", "", perm(`Permissions Violation for Publish to "$JS.API.STREAM.INFO.RTC_DLQ"`),
			&PermissionError{Op: "publish", Subject: "$JS.API.STREAM.INFO.RTC_DLQ", Hint: "this command needs the operator user (--user operator, or its credentials); the subscriber user may only read sessions, events and history"}},
		{"reconcile", "", perm(`Permissions Violation for Publish to "rtc.ctl.ingest.reconcile"`),
			&PermissionError{Op: "publish", Subject: "rtc.ctl.ingest.reconcile", Hint: "this command needs the operator user (--user operator, or its credentials); the subscriber user may only read sessions, events and history"}},
		{"a read", "", perm(`Permissions Violation for Publish to "$JS.API.CONSUMER.CREATE.RTC_EVENTS.x"`),
			&PermissionError{Op: "publish", Subject: "$JS.API.CONSUMER.CREATE.RTC_EVENTS.x", Hint: "the user lacks a permission this command needs: docs/rtcctl.md lists each command's grants"}},
		{"with a queue", "", perm(`Permissions Violation for Subscription to "rtc.ctl.ingest.reconcile" using queue "rtc-ingest"`),
			&PermissionError{Op: "subscribe", Subject: "rtc.ctl.ingest.reconcile", Hint: "the user lacks a permission this command needs: docs/rtcctl.md lists each command's grants"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseViolation(tc.err, `user "u"`, tc.inbox)
			if tc.want == nil {
				if got != nil {
					t.Fatalf("got %+v, want nil", got)
				}
				return
			}
			tc.want.User = `user "u"`
			if got == nil || *got != *tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestProbeSlowNATS: a NATS server that greets later than the probe's
// first wait (a slow link) is still taken for one, the HTTP request the
// probe sent meanwhile notwithstanding.
func TestProbeSlowNATS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		time.Sleep(probeWait + 300*time.Millisecond)
		_, _ = io.WriteString(c, "INFO {\"server_id\":\"x\"}\r\n")
		_, _ = io.Copy(io.Discard, c)
	}()
	if err := probeNATS(context.Background(), "nats://"+l.Addr().String(), 5*time.Second); err != nil {
		t.Fatalf("a slow NATS server: %v", err)
	}
}
