package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/rtcsessions/rtc-sessions/internal/startup"
)

// PushOptions configure Push, a stand-in for homeservers: it sends a
// JSON-lines file to an ingest as real appservice transactions. It exists for
// the demo and for smoke tests of a deployment.
type PushOptions struct {
	URL         string            // the ingest's appservice base URL
	Tokens      map[string]string // homeserver name (= Matrix server name) -> hs_token
	Live        bool              // shift timestamps so the file starts now, and keep its pacing
	Speed       float64           // with Live: play the file this many times faster
	RetryFor    time.Duration     // how long to retry a transaction answered 429 or 5xx
	Client      *http.Client
	Out         io.Writer // one line per event sent
	Now         func() time.Time
	TxnIDPrefix string
}

type pushEvent struct {
	raw    map[string]json.RawMessage
	ts     int64
	room   string
	sender string
	typ    string
	line   int
}

// Push sends every line of r. An event goes, like federation would deliver
// it, to the homeserver of each sender seen in its room so far that has a
// token, so an event of a room shared by two homeservers arrives twice (and
// is stored once). It returns on the first transaction that is not accepted.
func Push(ctx context.Context, r io.Reader, opts PushOptions) error {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Speed <= 0 {
		opts.Speed = 1
	}
	if opts.TxnIDPrefix == "" {
		opts.TxnIDPrefix = strconv.FormatInt(opts.Now().UnixNano(), 36)
	}
	var evs []pushEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var pe pushEvent
		if err := json.Unmarshal(line, &pe.raw); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		_ = json.Unmarshal(pe.raw["origin_server_ts"], &pe.ts)
		_ = json.Unmarshal(pe.raw["room_id"], &pe.room)
		_ = json.Unmarshal(pe.raw["sender"], &pe.sender)
		_ = json.Unmarshal(pe.raw["type"], &pe.typ)
		pe.line = n
		evs = append(evs, pe)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if len(evs) == 0 {
		return nil
	}
	start := opts.Now()
	base := evs[0].ts
	shift := int64(0)
	if opts.Live {
		shift = start.UnixMilli() - base
	}
	servers := map[string][]string{} // room -> homeservers that take part
	for i, pe := range evs {
		if opts.Live {
			due := start.Add(time.Duration(float64(pe.ts-base)/opts.Speed) * time.Millisecond)
			if d := due.Sub(opts.Now()); d > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(d):
				}
			}
			rebase(pe.raw, shift)
		}
		if hs := serverName(pe.sender); opts.Tokens[hs] != "" && !contains(servers[pe.room], hs) {
			servers[pe.room] = append(servers[pe.room], hs)
		}
		targets := servers[pe.room]
		if len(targets) == 0 {
			return fmt.Errorf("line %d: no token for the homeserver of %s", pe.line, pe.sender)
		}
		body, err := json.Marshal(map[string]any{"events": []any{pe.raw}})
		if err != nil {
			return fmt.Errorf("line %d: %w", pe.line, err)
		}
		codes := make([]string, 0, len(targets))
		for _, hs := range targets {
			code, err := sendTxn(ctx, opts, hs, fmt.Sprintf("%s-%d", opts.TxnIDPrefix, i), body)
			if err != nil {
				return fmt.Errorf("line %d via %s: %w", pe.line, hs, err)
			}
			codes = append(codes, fmt.Sprintf("%s→%d", hs, code))
		}
		if opts.Out != nil {
			sk := ""
			if raw, ok := pe.raw["state_key"]; ok {
				var s string
				_ = json.Unmarshal(raw, &s)
				sk = " [" + s + "]"
			}
			fmt.Fprintf(opts.Out, "push  %-32s %-22s %s%s  %s\n", pe.typ, pe.room, pe.sender, sk, strings.Join(codes, " "))
		}
	}
	return nil
}

func sendTxn(ctx context.Context, opts PushOptions, hs, txnID string, body []byte) (int, error) {
	deadline := opts.Now().Add(opts.RetryFor)
	code := 0
	err := startup.Retry(ctx, 200*time.Millisecond, 5*time.Second, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut,
			strings.TrimRight(opts.URL, "/")+"/_matrix/app/v1/transactions/"+txnID, bytes.NewReader(body))
		if err != nil {
			return backoff.Permanent(err)
		}
		req.Header.Set("Authorization", "Bearer "+opts.Tokens[hs])
		req.Header.Set("Content-Type", "application/json")
		resp, err := opts.Client.Do(req)
		code = 0
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
			if code == http.StatusOK {
				return nil
			}
			if code < 500 && code != http.StatusTooManyRequests { // 429: the ingest's body budget is full, retry
				return backoff.Permanent(fmt.Errorf("transaction %s refused: HTTP %d", txnID, code))
			}
			err = fmt.Errorf("HTTP %d", code)
		}
		if opts.Now().After(deadline) {
			return backoff.Permanent(fmt.Errorf("transaction %s not accepted: %w", txnID, err))
		}
		return err
	}, nil)
	if err != nil && ctx.Err() != nil {
		return code, ctx.Err()
	}
	return code, err
}

// rebase shifts the event's timestamps (origin_server_ts, received_at and the
// content's created_ts / expires_ts) by shift ms.
func rebase(raw map[string]json.RawMessage, shift int64) {
	for _, k := range []string{"origin_server_ts", "received_at"} {
		shiftField(raw, k, shift)
	}
	var content map[string]json.RawMessage
	if json.Unmarshal(raw["content"], &content) == nil && content != nil {
		changed := shiftField(content, "created_ts", shift)
		changed = shiftField(content, "expires_ts", shift) || changed
		if changed {
			if b, err := json.Marshal(content); err == nil {
				raw["content"] = b
			}
		}
	}
}

func shiftField(m map[string]json.RawMessage, k string, shift int64) bool {
	var v int64
	if raw, ok := m[k]; !ok || json.Unmarshal(raw, &v) != nil {
		return false
	}
	m[k] = json.RawMessage(strconv.FormatInt(v+shift, 10))
	return true
}

func serverName(user string) string {
	if i := strings.IndexByte(user, ':'); i >= 0 {
		return user[i+1:]
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
