package hostile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// putLikeHomeserver sends one transaction until it is stored, as a
// homeserver does: after a 429 it waits retry_after_ms, after a 503 its
// Retry-After, and it gives up on any other answer. It returns how many
// 429s it got, and calls on429 (if not nil) at each.
func putLikeHomeserver(ctx context.Context, addr, tok, txnID, body string, on429 func()) (n429 int, err error) {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+addr+"/_matrix/app/v1/transactions/"+txnID, strings.NewReader(body))
		if err != nil {
			return n429, fmt.Errorf("transaction %s: %w", txnID, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return n429, fmt.Errorf("transaction %s: %w", txnID, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return n429, fmt.Errorf("transaction %s: reading the answer: %w", txnID, err)
		}
		var wait time.Duration
		switch resp.StatusCode {
		case http.StatusOK:
			return n429, nil
		case http.StatusTooManyRequests:
			n429++
			if on429 != nil {
				on429()
			}
			var e struct {
				RetryAfterMS int64 `json:"retry_after_ms"`
			}
			if err := json.Unmarshal(b, &e); err != nil || e.RetryAfterMS <= 0 {
				return n429, fmt.Errorf("transaction %s: 429 without retry_after_ms: %s", txnID, b)
			}
			wait = time.Duration(e.RetryAfterMS) * time.Millisecond
		case http.StatusServiceUnavailable:
			s, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil {
				return n429, fmt.Errorf("transaction %s: 503 without Retry-After: %s", txnID, b)
			}
			wait = time.Duration(s) * time.Second
		default:
			return n429, fmt.Errorf("transaction %s: HTTP %d %s", txnID, resp.StatusCode, b)
		}
		select {
		case <-ctx.Done():
			return n429, fmt.Errorf("transaction %s not stored: %w", txnID, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// testMemoryFlood: a memory flood at a small scale, through to session
// events. Many homeservers' large transactions at once against an ingest
// whose body budget holds two of them: the bodies in flight never exceed
// the budget, the ones beyond it are answered 429 and stored on retry, an
// events array beyond max_events is refused (413) after reading no more
// than max_events elements, and every membership in the flood becomes
// exactly one member_joined. (Peak memory of the ingest alone is measured
// in internal/ingest: TestAppserviceMemoryFlood.)
func (s *stack) testMemoryFlood(t *testing.T) {
	const (
		maxBody = 256 << 10
		budget  = 2 * maxBody
		senders = 12
		fillers = 200 // filtered events of ~1 KiB in each transaction
	)
	addr, metrics := startIngest(t, s.ns, func(c *ingest.Config) {
		c.Appservice.MaxBodyBytes = maxBody
		c.Appservice.BodyBudgetBytes = budget
		c.Appservice.RetryAfter = 100 * time.Millisecond
		c.Appservice.MaxEvents = fillers + 10
	})
	room := id.RoomID("!flood:flood.test")
	filler := func(i, j int) string {
		return fmt.Sprintf(`{"type":"m.room.message","sender":"@spam:flood.test","event_id":"$fill-%d-%d","room_id":%q,`+
			`"origin_server_ts":%d,"content":{"msgtype":"m.text","body":%q}}`, i, j, room, time.Now().UnixMilli(), strings.Repeat("x", 1000))
	}
	users := make([]id.UserID, senders)
	bodies := make([]string, senders)
	for i := range senders {
		users[i] = id.UserID(fmt.Sprintf("@user%d:flood.test", i))
		evs := []string{join(t, fmt.Sprintf("$flood-%d", i), room, users[i], "DEV", time.Now().UnixMilli())}
		for j := range fillers {
			evs = append(evs, filler(i, j))
		}
		bodies[i] = `{"events":[` + strings.Join(evs, ",") + `]}`
		if len(bodies[i]) > maxBody || 3*len(bodies[i]) <= budget {
			t.Fatalf("transaction of %d bytes: want at most %d, and three over the budget %d", len(bodies[i]), maxBody, budget)
		}
	}
	count := func(code string) float64 {
		return metric(t, metrics, "rtc_ingest_appservice_transactions_total", "homeserver", hsA, "code", code) +
			metric(t, metrics, "rtc_ingest_appservice_transactions_total", "homeserver", hsB, "code", code)
	}
	before429, before413 := count("429"), count("413")

	// The budget gauge, sampled while the flood runs.
	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			resp, err := http.Get("http://" + metrics + "/metrics")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "rtc_ingest_appservice_body_bytes_in_flight "); ok {
					if f, err := strconv.ParseFloat(v, 64); err == nil && int64(f) > peak.Load() {
						peak.Store(int64(f))
					}
				}
			}
		}
	}()

	// Two slow transactions hold the whole budget while the flood
	// starts, so that every homeserver is refused at least once
	// whatever the machine's speed; then they complete and the
	// homeservers' retries compete for the budget.
	slow := []func() txnResult{
		slowTxn(t, addr, hsTokens[hsA], "flood-slow-1", maxBody),
		slowTxn(t, addr, hsTokens[hsB], "flood-slow-2", maxBody),
	}
	waitFor(t, "the slow transactions' reservations", func() bool {
		return metric(t, metrics, "rtc_ingest_appservice_body_bytes_in_flight") == budget
	})

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var wg, refused sync.WaitGroup
	var total429, early atomic.Int64
	errs := make(chan error, senders+1)
	send := func(hs, txnID, body string) {
		defer wg.Done()
		var once sync.Once
		n, err := putLikeHomeserver(ctx, addr, hsTokens[hs], txnID, body, func() { once.Do(refused.Done) })
		once.Do(func() { early.Add(1); refused.Done() }) // answered without a single 429
		total429.Add(int64(n))
		if err != nil {
			errs <- err
		}
	}
	for i := range senders {
		wg.Add(1)
		refused.Add(1)
		go send([]string{hsA, hsB}[i%2], fmt.Sprintf("flood-%d", i), bodies[i])
	}
	// One more homeserver sends an events array longer than max_events.
	wg.Add(1)
	refused.Add(1)
	go send(hsA, "flood-long", `{"events":[`+strings.TrimSuffix(strings.Repeat("0,", 100000), ",")+`]}`)
	refused.Wait()
	if n := early.Load(); n != 0 {
		t.Errorf("%d transactions answered without a 429 while the slow ones held the budget", n)
	}
	for i, finish := range slow {
		if r := finish(); r.status != http.StatusOK {
			t.Errorf("slow transaction %d: HTTP %d %s", i+1, r.status, r.body)
		}
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	close(errs)
	var longErr error
	for err := range errs {
		if strings.Contains(err.Error(), "flood-long") {
			longErr = err
			continue
		}
		t.Error(err)
	}
	if longErr == nil || !strings.Contains(longErr.Error(), "HTTP 413") {
		t.Errorf("events array longer than max_events: %v, want HTTP 413", longErr)
	}

	if p := peak.Load(); p > budget {
		t.Errorf("body bytes in flight peaked at %d, over the budget %d", p, budget)
	}
	d429 := count("429") - before429
	if d429 < senders+1 || d429 != float64(total429.Load()) {
		t.Errorf("transactions_total{code=429} +%v, homeservers got %d 429s; want the same, at least %d", d429, total429.Load(), senders+1)
	}
	if d := count("413") - before413; d != 1 {
		t.Errorf("transactions_total{code=413} +%v, want +1", d)
	}

	// Every membership of the flood is one member_joined, nothing lost,
	// nothing twice.
	waitFor(t, fmt.Sprintf("%d members joined in %s", senders, room), func() bool {
		n := 0
		for _, e := range s.sessions.room(t, room) {
			if e.Kind == events.KindMemberJoined {
				n++
			}
		}
		return n >= senders
	})
	joined := map[id.UserID]int{}
	evs := s.sessions.room(t, room)
	for _, e := range evs {
		if e.Kind == events.KindMemberJoined {
			joined[e.Member.UserID]++
		}
	}
	for _, u := range users {
		if joined[u] != 1 {
			t.Errorf("%s joined %d times, want once:%s", u, joined[u], describe(evs))
		}
	}
	if len(evs) != senders+1 {
		t.Errorf("%d session events, want session_started and %d member_joined:%s", len(evs), senders, describe(evs))
	}
	stored := 0
	for _, r := range rawRecords(t, s.js, room) {
		if r.Kind == rawevent.InputEvent {
			if r.Type != "org.matrix.msc3401.call.member" {
				t.Errorf("RTC_RAW holds a %s event", r.Type)
			}
			stored++
		}
	}
	if stored != senders {
		t.Errorf("RTC_RAW holds %d events of the room, want the %d memberships once each", stored, senders)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("the flood took longer than %s", waitTimeout)
	}
}
