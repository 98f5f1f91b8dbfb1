package rtcctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PermissionError is a publish or subscription the server refused. The
// server reports it asynchronously (a -ERR line, not an answer to the
// request), so without it a command would wait for its request's timeout.
type PermissionError struct {
	Op      string // "publish" or "subscribe"
	Subject string
	User    string // as rtcctl authenticated, e.g. `user "subscriber"`
	Hint    string
}

func (p *PermissionError) Error() string {
	if p.Hint == "" {
		return p.denied()
	}
	return p.denied() + " (hint: " + p.Hint + ")"
}

func (p *PermissionError) denied() string {
	return fmt.Sprintf("permission denied: %s may not %s to %s", p.User, p.Op, p.Subject)
}

// violationRE reads the server's text: Permissions Violation for Publish to
// "subject", or for Subscription to "subject" (using queue "q").
var violationRE = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "?([^"\s]+)"?`)

// operatorOnly are the subjects only the operator user may publish to
// (docs/rtcctl.md lists each command's grants): refused to another user,
// the command needs the operator.
var operatorOnly = []string{
	"$JS.API.STREAM.INFO.RTC_RAW", "$JS.API.CONSUMER.INFO.RTC_RAW.",
	"$JS.API.STREAM.INFO.KV_rtc_workers", "$JS.API.CONSUMER.CREATE.KV_rtc_workers.", "$JS.FC.KV_rtc_workers.",
	"$JS.API.STREAM.INFO.RTC_DLQ", "$JS.API.CONSUMER.CREATE.RTC_DLQ.", "$JS.API.CONSUMER.MSG.NEXT.RTC_DLQ.",
	"$JS.API.STREAM.MSG.GET.RTC_DLQ", "$JS.API.STREAM.MSG.DELETE.RTC_DLQ", "rtc.raw.", "rtc.ctl.",
}

// parseViolation turns the error the nats connection reports into a
// PermissionError with a hint; nil when err is no permission violation.
func parseViolation(err error, user, inboxPrefix string) *PermissionError {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
		return nil
	}
	m := violationRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &PermissionError{Op: "do", Subject: "what it asked (" + err.Error() + ")", User: user}
	}
	p := &PermissionError{Op: "publish", Subject: m[2], User: user}
	if strings.EqualFold(m[1], "subscription") {
		p.Op = "subscribe"
	}
	prefix := inboxPrefix
	if prefix == "" {
		prefix = nats.InboxPrefix[:len(nats.InboxPrefix)-1] // "_INBOX"
	}
	switch {
	case p.Op == "subscribe" && strings.HasPrefix(p.Subject, prefix+"."):
		if inboxPrefix == "" {
			p.Hint = "replies come to _INBOX.>, which this user may not receive: give the user's inbox prefix with --inbox-prefix " +
				"(the shipped operator's is _INBOX_operator, see docs/nats.md)"
		} else {
			p.Hint = fmt.Sprintf("replies come to %s.>, which this user may not receive: check --inbox-prefix against the user's permissions", inboxPrefix)
		}
	case p.Op == "publish" && hasAnyPrefix(p.Subject, operatorOnly):
		p.Hint = "this command needs the operator user (--user operator, or its credentials); the subscriber user may only read " +
			"sessions, events and history"
	default:
		p.Hint = "the user lacks a permission this command needs: docs/rtcctl.md lists each command's grants"
	}
	return p
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// benignViolation: refusals that do not stop a command. A read-only user
// may not delete the ephemeral consumers it created (a KV watch's Stop does
// so); the server removes them once idle.
func benignViolation(p *PermissionError) bool {
	return p.Op == "publish" && strings.HasPrefix(p.Subject, "$JS.API.CONSUMER.DELETE.")
}

// permWatch remembers the first refusal of a connection and cancels the
// command's context with it, so that the command ends at once.
type permWatch struct {
	mu     sync.Mutex
	err    *PermissionError
	cancel context.CancelCauseFunc
}

func (w *permWatch) report(p *PermissionError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	w.err = p
	if w.cancel != nil {
		w.cancel(p)
	}
}

func (w *permWatch) get() *PermissionError {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// describeUser names how rtcctl authenticated, for messages.
func describeUser(t connTarget) string {
	switch {
	case t.Config.User != "":
		return fmt.Sprintf("user %q", t.Config.User)
	case t.Config.CredsFile != "":
		return fmt.Sprintf("the user of %s", t.Config.CredsFile)
	case t.Config.NKeySeedFile != "":
		return fmt.Sprintf("the nkey user of %s", t.Config.NKeySeedFile)
	case t.Token != "":
		return "the token user"
	default:
		return "the anonymous user (no --user, --creds or context)"
	}
}

// probeWait is how long a probe waits for a server's first line before it
// also tries HTTP: a NATS server sends its INFO line as soon as it accepts a
// connection.
const probeWait = time.Second

// ErrNotNATS is returned when the server at a URL does not speak NATS.
var ErrNotNATS = errors.New("nothing speaking NATS")

// probeNATS checks, before the nats client waits its whole timeout for a
// greeting that never comes, that something speaking NATS listens at u: it
// connects and reads the first line (a NATS server's INFO); if none comes
// within probeWait it sends an HTTP request, which an HTTP port
// (nats-server's monitoring port, a service's metrics port) answers at
// once, and waits for the rest of the timeout for either answer (a NATS
// server slower than probeWait still greets). A refused connection is
// reported at once. TLS-first and websocket URLs are not probed.
func probeNATS(ctx context.Context, raw string, timeout time.Duration) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil // the nats client reports a bad URL itself
	}
	switch u.Scheme {
	case "nats", "tls", "":
	default:
		return nil
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "4222")
	}
	shown := u.Scheme + "://" + host
	start := time.Now()
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("connect to nats %s: connection refused: no server listens there (is nats-server running, and is this its client port, 4222 by default?)", shown)
		}
		return nil // DNS, unreachable, timeouts: the nats client's error says it
	}
	defer c.Close()
	r := bufio.NewReader(c)
	first := func(until time.Time) (string, error) {
		_ = c.SetReadDeadline(until)
		b, err := r.Peek(5)
		return string(b), err
	}
	greeting, err := first(time.Now().Add(min(probeWait, timeout)))
	if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return notNATS(shown, "it closed the connection without a NATS greeting")
		}
		if u.Scheme == "tls" {
			return nil // a server configured for TLS first waits for the handshake
		}
		// Silence: a server that waits for the client to speak first, as
		// HTTP does.
		_ = c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", u.Hostname()); err != nil {
			return notNATS(shown, "it closed the connection without a NATS greeting")
		}
		greeting, err = first(start.Add(max(timeout, 2*probeWait)))
		if err != nil {
			if errors.As(err, &ne) && ne.Timeout() {
				return notNATS(shown, fmt.Sprintf("no NATS greeting within %s (--timeout)", max(timeout, 2*probeWait)))
			}
			return notNATS(shown, "it closed the connection without a NATS greeting")
		}
	}
	switch greeting {
	case "INFO ":
		return nil
	case "HTTP/":
		return notNATS(shown, "an HTTP server answered")
	default:
		return notNATS(shown, fmt.Sprintf("it sent %q", greeting))
	}
}

func notNATS(shown, why string) error {
	return fmt.Errorf("%w at %s: %s (is this the HTTP port? NATS clients use the client port, 4222 by default)", ErrNotNATS, shown, why)
}

// probeAll probes each URL; it fails only when none speaks NATS (the first
// URL's reason).
func probeAll(ctx context.Context, urls []string, timeout time.Duration) error {
	var firstErr error
	for _, u := range urls {
		err := probeNATS(ctx, u, timeout)
		if err == nil {
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// explain is a hint for an error a wrong setup causes ("" for none): the
// server's own words name the symptom, not what to check.
func explain(err error, who string) string {
	if who == "" {
		who = "the user"
	}
	low := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(low, "authorization violation"):
		return fmt.Sprintf("the server refused %s: check the password, creds or nkey, and that they belong to this server", who)
	case errors.Is(err, nats.ErrAuthExpired) || strings.Contains(low, "authentication expired"):
		return fmt.Sprintf("the credentials of %s have expired", who)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		errors.Is(err, nats.ErrNoResponders):
		return fmt.Sprintf("JetStream is not enabled for %s on this server (nothing answers its JetStream API): "+
			"is this the rtc-sessions NATS server, and the user one of its accounts (docs/nats.md)?", who)
	}
	return ""
}
