package pipelinetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// MaxTxnEvents bounds a transaction: consecutive due deliveries of one
// homeserver go together, as a homeserver batches.
const MaxTxnEvents = 8

// Sender plays a workload's deliveries as appservice transactions, one at a
// time, each retried (same transaction id) until the ingest answers 200, as
// a homeserver does.
type Sender struct {
	// URL is the ingest's appservice base URL (asked before each attempt:
	// a restarted ingest may listen elsewhere).
	URL func() string
	// Tokens maps homeserver names to their hs_token.
	Tokens map[string]string
	T0     time.Time
	// Deadline bounds the retries of one transaction.
	Deadline time.Time
	// OnSending is called just before each attempt, OnAccepted when a
	// transaction was answered 200 (its inputs are being processed right
	// then); either may be nil. Faults use them to strike mid-request.
	OnSending, OnAccepted func()

	mu    sync.Mutex
	stats SendStats
}

// SendStats counts what Send did.
type SendStats struct {
	Txns, Attempts, FailedAttempts int
	Outcomes                       map[string]int // failed attempts by answer
}

// Stats returns a copy of the counts so far.
func (s *Sender) Stats() SendStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.stats
	out.Outcomes = map[string]int{}
	for k, v := range s.stats.Outcomes {
		out.Outcomes[k] = v
	}
	return out
}

func (s *Sender) count(f func(*SendStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stats.Outcomes == nil {
		s.stats.Outcomes = map[string]int{}
	}
	f(&s.stats)
}

// Send plays wl's deliveries at their planned times. Consecutive due
// deliveries of one homeserver share a transaction.
func (s *Sender) Send(wl *Workload) error {
	client := &http.Client{Timeout: 10 * time.Second}
	t0ms := s.T0.UnixMilli()
	txnSeq := map[string]int{}
	ds := wl.Deliveries
	for i := 0; i < len(ds); {
		time.Sleep(time.Until(s.T0.Add(ds[i].At)))
		hs := ds[i].HS
		j := i + 1
		for j < len(ds) && j-i < MaxTxnEvents && ds[j].HS == hs && !s.T0.Add(ds[j].At).After(time.Now()) {
			j++
		}
		evs := make([]json.RawMessage, 0, j-i)
		for _, d := range ds[i:j] {
			evs = append(evs, d.Ev.JSON(t0ms))
		}
		body, err := json.Marshal(map[string]any{"events": evs})
		if err != nil {
			return fmt.Errorf("encode transaction: %w", err)
		}
		txnSeq[hs]++
		txnID := fmt.Sprintf("chaos-%d", txnSeq[hs])
		if err := s.put(client, hs, txnID, body); err != nil {
			return err
		}
		s.count(func(st *SendStats) { st.Txns++ })
		i = j
	}
	return nil
}

// put sends one transaction until it is answered 200: a 5xx or a broken
// connection is retried after a short pause (the ingest may be restarting,
// NATS may be down or electing a leader); any other answer is a failure.
func (s *Sender) put(client *http.Client, hs, txnID string, body []byte) error {
	first := time.Now()
	wait := 50 * time.Millisecond
	for {
		url := s.URL() + "/_matrix/app/v1/transactions/" + txnID
		req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("transaction %s/%s: %w", hs, txnID, err)
		}
		req.Header.Set("Authorization", "Bearer "+s.Tokens[hs])
		req.Header.Set("Content-Type", "application/json")
		s.count(func(st *SendStats) { st.Attempts++ })
		if s.OnSending != nil {
			s.OnSending()
		}
		resp, err := client.Do(req)
		status, detail := 0, ""
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			status, detail = resp.StatusCode, strings.TrimSpace(string(b))
		} else {
			detail = err.Error()
		}
		switch {
		case status == http.StatusOK:
			if s.OnAccepted != nil {
				s.OnAccepted()
			}
			return nil
		case status != 0 && status < 500:
			return fmt.Errorf("transaction %s/%s answered %d: %s", hs, txnID, status, detail)
		}
		outcome := fmt.Sprint(status)
		if status == 0 {
			outcome = "no answer"
		}
		s.count(func(st *SendStats) { st.FailedAttempts++; st.Outcomes[outcome]++ })
		if time.Now().After(s.Deadline) {
			return fmt.Errorf("transaction %s/%s not accepted after %s; last answer %d %s", hs, txnID,
				time.Since(first).Round(time.Millisecond), status, detail)
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}
