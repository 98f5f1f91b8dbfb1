package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// memPeak samples the Go heap of this process until stopped: the peak of
// HeapInuse (what the heap really holds, garbage not yet collected included)
// and of HeapInuse+StackInuse, plus the process's peak RSS (VmHWM) at the end.
type memPeak struct {
	stop     chan struct{}
	done     chan struct{}
	baseline uint64
	peakHeap atomic.Uint64
	samples  atomic.Int64
}

func startMemPeak(every time.Duration) *memPeak {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := &memPeak{stop: make(chan struct{}), done: make(chan struct{}), baseline: ms.HeapInuse}
	p.peakHeap.Store(ms.HeapInuse)
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			runtime.ReadMemStats(&ms)
			p.samples.Add(1)
			if ms.HeapInuse > p.peakHeap.Load() {
				p.peakHeap.Store(ms.HeapInuse)
			}
		}
	}()
	return p
}

// memFigures are what a flood run measured, in MiB.
type memFigures struct {
	BaselineHeapMiB, PeakHeapMiB, PeakRSSMiB float64
	Samples                                  int64
}

func (p *memPeak) finish() memFigures {
	close(p.stop)
	<-p.done
	return memFigures{BaselineHeapMiB: mib(p.baseline), PeakHeapMiB: mib(p.peakHeap.Load()),
		PeakRSSMiB: peakRSSMiB(), Samples: p.samples.Load()}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// peakRSSMiB is this process's peak resident set (Linux VmHWM; 0 elsewhere).
func peakRSSMiB() float64 { return procStatusMiB("self", "VmHWM") }

// procStatusMiB reads a kB field (VmHWM: peak RSS, VmRSS: current) of
// /proc/<pid>/status in MiB; 0 when there is none (not Linux, process gone).
func procStatusMiB(pid, field string) float64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// floodTxn generates one transaction body on the fly (a homeserver does not
// hold it in our memory either): events of eventBytes each, three forwarded
// memberships for every filtered message, until the body reaches about
// bodyBytes. Its length is known before it is sent (Content-Length).
type floodTxn struct {
	k          int // transaction number: event ids and rooms
	events     int
	padBytes   int
	forwarded  []string // event ids of the forwarded events
	contentLen int64
}

func newFloodTxn(k int, bodyBytes, eventBytes int) *floodTxn {
	f := &floodTxn{k: k, padBytes: eventBytes - 400}
	f.events = bodyBytes / eventBytes
	for j := range f.events {
		if j%4 != 3 {
			f.forwarded = append(f.forwarded, f.eventID(j))
		}
	}
	n, _ := f.writeTo(io.Discard)
	f.contentLen = n
	return f
}

func (f *floodTxn) eventID(j int) string { return fmt.Sprintf("$flood%d_%d", f.k, j) }

func (f *floodTxn) writeTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := &countWriter{w: bw}
	pad := strings.Repeat("x", f.padBytes)
	fmt.Fprint(cw, `{"events":[`)
	for j := range f.events {
		if j > 0 {
			fmt.Fprint(cw, ",")
		}
		if j%4 == 3 {
			fmt.Fprintf(cw, `{"type":"m.room.message","sender":"@u%d:hs1.test","event_id":%q,"room_id":"!flood%d:hs1.test",`+
				`"origin_server_ts":1700000000000,"content":{"msgtype":"m.text","body":%q}}`, j, f.eventID(j), f.k%8, pad)
			continue
		}
		fmt.Fprintf(cw, `{"type":"org.matrix.msc3401.call.member","state_key":"_@u%d:hs1.test_D%d_m.call","sender":"@u%d:hs1.test",`+
			`"event_id":%q,"room_id":"!flood%d:hs1.test","origin_server_ts":%d,"content":{"application":"m.call","call_id":"",`+
			`"scope":"m.room","device_id":"D%d","expires":14400000,"pad":%q}}`, j, f.k, j, f.eventID(j), f.k%8, 1700000000000+int64(j), f.k, pad)
	}
	fmt.Fprint(cw, `],"ephemeral":[]}`)
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	return cw.n, cw.err
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// hugeArrayBody is {"events":[{},{},...]} with n elements, generated on the fly.
type hugeArrayBody struct{ n int }

func (h hugeArrayBody) writeTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := &countWriter{w: bw}
	_, _ = io.WriteString(cw, `{"events":[{}`)
	for i := 1; i < h.n && cw.err == nil; i++ {
		_, _ = io.WriteString(cw, `,{}`)
	}
	_, _ = io.WriteString(cw, `]}`)
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	return cw.n, cw.err
}

// matrixError is the Matrix error body as a homeserver reads it.
type matrixError struct {
	ErrCode      string `json:"errcode"`
	Error        string `json:"error"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

// putStreamed sends a generated body with its Content-Length and returns
// the status and Matrix error body (or the transport error).
func putStreamed(ctx context.Context, url, token string, length int64, gen func(io.Writer) (int64, error)) (int, matrixError, error) {
	pr, pw := io.Pipe()
	go func() {
		_, err := gen(pw)
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, pr)
	if err != nil {
		return 0, matrixError{}, err
	}
	req.ContentLength = length
	req.Header.Set("Authorization", "Bearer "+tokHS1)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		pr.CloseWithError(err)
		return 0, matrixError{}, err
	}
	defer resp.Body.Close()
	pr.CloseWithError(errors.New("answered")) // the server may answer before reading it all
	var me matrixError
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&me)
	return resp.StatusCode, me, nil
}

// floodConfig sizes a flood; maxBody and budget 0 keep the production
// defaults (10 MiB and 64 MiB).
type floodConfig struct {
	txns, bodyBytes, hugeN int
	maxBody, budget        int64
}

// memoryFlood is the flood that once ran the ingest out of memory (a pod
// OOM-killed), at full size. Under the race
// detector (which makes decoding tens of times slower) the same flood runs at
// a tenth of the size against a budget scaled alike, so that 429s, retries
// and exactly-once storage are still exercised there; the memory figures
// that matter come from the full-size run without it.
func memoryFlood() floodConfig {
	if raceEnabled {
		return floodConfig{txns: 24, bodyBytes: 1 << 20, hugeN: 2_000_000, maxBody: 1<<20 + 4096, budget: 6 << 20}
	}
	return floodConfig{txns: 24, bodyBytes: 10 << 20, hugeN: 2_000_000}
}

// floodResult is what runFlood observed.
type floodResult struct {
	memFigures
	Txns, TooMany429, Unavailable503, TransportErrors int
	HugeStatus                                        int
	HugeErrcode                                       string
	Wanted                                            map[string]bool // forwarded event ids
	Elapsed                                           time.Duration
}

// runFlood plays the memory flood (floodClients) against an in-process
// ingest appservice with the production settings (or fc's bounds) behind a
// real listener, sampling this process's heap meanwhile.
func runFlood(tb testing.TB, e *env, fc floodConfig) floodResult {
	tb.Helper()
	cfg := DefaultConfig() // the production settings, not the test env's
	if fc.maxBody > 0 {
		cfg.Appservice.MaxBodyBytes, cfg.Appservice.BodyBudgetBytes = fc.maxBody, fc.budget
	}
	pub, err := NewPublisher(e.nc, cfg.Publish.PublisherConfig(), e.m, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	as := NewAppservice([]Homeserver{{Name: "hs1", HSToken: tokHS1}}, pub, e.m, zap.NewNop(), cfg.Appservice.Options())
	srv := httptest.NewServer(as.Handler())
	defer srv.Close()
	peak := startMemPeak(5 * time.Millisecond)
	res := floodClients(tb, srv.URL, fc)
	res.memFigures = peak.finish()
	if n := as.budget.inUse(); n != 0 {
		tb.Errorf("%d budget bytes still reserved after the flood", n)
	}
	return res
}

// floodClients is a hostile homeserver: fc.txns concurrent
// transactions of fc.bodyBytes each, plus one body holding an array of
// fc.hugeN elements, sent to the appservice at base and retried as a
// homeserver does after a 429 (waiting retry_after_ms), a 503 or a broken
// connection, until each is answered for good.
func floodClients(tb testing.TB, base string, fc floodConfig) floodResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bodies := make([]*floodTxn, fc.txns)
	res := floodResult{Txns: fc.txns, Wanted: map[string]bool{}}
	for k := range bodies {
		bodies[k] = newFloodTxn(k, fc.bodyBytes, 60<<10)
		for _, id := range bodies[k].forwarded {
			res.Wanted[id] = true
		}
	}
	var tooMany, unavailable, transport atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for k, b := range bodies {
		wg.Go(func() {
			url := base + "/_matrix/app/v1/transactions/flood" + strconv.Itoa(k)
			for ctx.Err() == nil {
				code, me, err := putStreamed(ctx, url, tokHS1, b.contentLen, b.writeTo)
				switch {
				case err != nil: // the server answered 429 while we were still sending
					transport.Add(1)
					time.Sleep(time.Duration(50+rand.IntN(100)) * time.Millisecond)
				case code == http.StatusTooManyRequests:
					tooMany.Add(1)
					time.Sleep(time.Duration(me.RetryAfterMS+rand.Int64N(200)) * time.Millisecond)
				case code == http.StatusServiceUnavailable: // acks too slow on a loaded machine: retried like a homeserver
					unavailable.Add(1)
					time.Sleep(time.Second)
				case code == http.StatusOK:
					return
				default:
					firstErr.CompareAndSwap(nil, fmt.Sprintf("transaction %d: %d %s %s", k, code, me.ErrCode, me.Error))
					return
				}
			}
		})
	}
	wg.Go(func() {
		h := hugeArrayBody{n: fc.hugeN}
		length, _ := h.writeTo(io.Discard)
		for ctx.Err() == nil {
			code, me, err := putStreamed(ctx, base+"/_matrix/app/v1/transactions/huge", tokHS1, length, h.writeTo)
			if err == nil && code != http.StatusTooManyRequests {
				res.HugeStatus, res.HugeErrcode = code, me.ErrCode
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.TooMany429, res.Unavailable503, res.TransportErrors = int(tooMany.Load()), int(unavailable.Load()), int(transport.Load())
	if v := firstErr.Load(); v != nil {
		tb.Fatal(v)
	}
	return res
}

// TestAppserviceMemoryFlood reproduces an OOM kill: 24 concurrent
// 10 MiB transactions plus one body holding a 2-million-element array
// against one ingest. Over budget the ingest answers 429, the retries go
// through, every valid event is stored exactly once, the huge array is
// refused with 413, and the heap stays far below the 256 MiB pod limit
// (the figure includes the embedded NATS server of this process).
func TestAppserviceMemoryFlood(t *testing.T) {
	e := newEnv(t)
	fc := memoryFlood()
	res := runFlood(t, e, fc)
	t.Logf("flood: %d transactions of %d KiB + a %d-element array in %s: %d answered 429, %d answered 503, %d broken connections; "+
		"heap baseline %.1f MiB, peak %.1f MiB (%d samples); process peak RSS %.1f MiB",
		res.Txns, fc.bodyBytes>>10, fc.hugeN, res.Elapsed.Round(time.Millisecond), res.TooMany429, res.Unavailable503, res.TransportErrors,
		res.BaselineHeapMiB, res.PeakHeapMiB, res.Samples, res.PeakRSSMiB)
	if res.TooMany429 == 0 {
		t.Error("no transaction was answered 429: the budget never filled")
	}
	if res.HugeStatus != http.StatusRequestEntityTooLarge || res.HugeErrcode != "M_TOO_LARGE" {
		t.Errorf("2M-element array: %d %s, want 413 M_TOO_LARGE", res.HugeStatus, res.HugeErrcode)
	}
	// The process holds the ingest, the embedded NATS server storing every
	// event (which holds more the slower the machine: 60-70 MiB of heap in
	// all on an idle one, 105 MiB seen under a load of 15 on 2 cores), and
	// the test's homeserver: all together must still stay well under the
	// ingest's 256 MiB pod limit. The ingest alone is measured by
	// TestIngestProcessMemoryFlood.
	if res.PeakHeapMiB > 192 {
		t.Errorf("peak heap %.1f MiB, want <= 192 (the pod limit is 256)", res.PeakHeapMiB)
	}
	if !raceEnabled && res.PeakRSSMiB > 256 {
		t.Errorf("process peak RSS %.1f MiB, want <= 256", res.PeakRSSMiB)
	}
	assertFloodStored(t, e.url, res.Wanted)
}

// assertFloodStored checks that RTC_RAW holds every wanted event exactly
// once and nothing else, reading subjects and ids only.
func assertFloodStored(t *testing.T, natsURL string, wanted map[string]bool) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		seen[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	missing, doubled, extra := 0, 0, 0
	for id := range wanted {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			doubled++
		}
	}
	for id := range seen {
		if !wanted[id] {
			extra++
		}
	}
	t.Logf("RTC_RAW: %d messages, %d wanted events", info.State.Msgs, len(wanted))
	if missing+doubled+extra > 0 || int(info.State.Msgs) != len(wanted) {
		t.Errorf("RTC_RAW holds %d messages for %d wanted events: %d missing, %d stored twice, %d unexpected",
			info.State.Msgs, len(wanted), missing, doubled, extra)
	}
}

// BenchmarkAppserviceFlood prints the peak heap and RSS of a flood (one per
// iteration) as benchmark metrics:
//
//	go test ./internal/ingest -run '^$' -bench AppserviceFlood -benchtime 1x
func BenchmarkAppserviceFlood(b *testing.B) {
	for range b.N {
		b.StopTimer()
		e := newEnv(b)
		b.StartTimer()
		res := runFlood(b, e, memoryFlood())
		b.ReportMetric(res.PeakHeapMiB, "peak-heap-MiB")
		b.ReportMetric(res.PeakRSSMiB, "peak-rss-MiB")
		b.ReportMetric(float64(res.TooMany429), "429s")
	}
}

// TestIngestProcessMemoryFlood is the same flood against the real
// `ingest serve` binary (built without -race, default configuration) and a
// nats-server process, measuring what matters for the pod: the ingest
// process's peak RSS (VmHWM), which must stay within the 256 MiB pod limit.
func TestIngestProcessMemoryFlood(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to read the ingest's peak RSS")
	}
	h := proctest.New(t)
	ns := h.StartNATS("")
	in, err := h.StartIngest(proctest.IngestConfig{Name: "flood", NATSURL: ns.URL(),
		HSTokens: map[string]string{"hs1": tokHS1}, AckTimeout: 5 * time.Second}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := in.WaitReady(time.Minute); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(in.Pid())
	before := procStatusMiB(pid, "VmRSS")
	fc := memoryFlood()
	fc.maxBody, fc.budget = 0, 0 // the binary runs the defaults
	res := floodClients(t, in.URL(), fc)
	peak := procStatusMiB(pid, "VmHWM")
	t.Logf("ingest process: RSS %.1f MiB before the flood, peak %.1f MiB; flood of %d x %d KiB + a %d-element array "+
		"in %s: %d answered 429, %d answered 503, %d broken connections",
		before, peak, fc.txns, fc.bodyBytes>>10, fc.hugeN, res.Elapsed.Round(time.Millisecond),
		res.TooMany429, res.Unavailable503, res.TransportErrors)
	if peak <= 0 || !in.Running() {
		t.Fatalf("no peak RSS for the ingest (running: %v)\n%s", in.Running(), in.Output())
	}
	if peak > 128 { // measured: about 40 MiB; the target is the 256 MiB pod limit
		t.Errorf("ingest peak RSS %.1f MiB, want <= 128 (half the 256 MiB pod limit)", peak)
	}
	if !raceEnabled && res.TooMany429 == 0 {
		t.Error("no transaction was answered 429: the budget never filled")
	}
	if res.HugeStatus != http.StatusRequestEntityTooLarge {
		t.Errorf("2M-element array: %d %s, want 413 M_TOO_LARGE", res.HugeStatus, res.HugeErrcode)
	}
	assertFloodStored(t, ns.URL(), res.Wanted)
}
