package bench

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(float64(100 - i)) // 100 ms .. 1 ms, unsorted on purpose
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", []time.Duration{ms(7)}, 99, ms(7)},
		{"p50 of 1..100", hundred, 50, ms(50)},
		{"p99 of 1..100", hundred, 99, ms(99)},
		{"p100 is the max", hundred, 100, ms(100)},
		{"tiny p is the min", hundred, 0.001, ms(1)},
		// Nearest rank: p99 of 10 samples is the largest one, not an
		// interpolation between the two largest.
		{"p99 of 10 is the max", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 1000}, 99, 1000},
		{"p50 of an even count is the lower middle", []time.Duration{4, 1, 3, 2}, 50, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("Percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
	if hundred[0] != ms(100) {
		t.Error("Percentile sorted its input in place")
	}
}

func TestSummarize(t *testing.T) {
	samples := []time.Duration{ms(3), ms(1), ms(250), ms(2), ms(4)}
	s := Summarize(samples)
	want := LatencySummary{N: 5, P50: ms(3), P99: ms(250), Max: ms(250)}
	if s != want {
		t.Fatalf("Summarize = %+v, want %+v", s, want)
	}
	if got := s.String(); got != "3.00 / 250 / 250 ms" {
		t.Errorf("String() = %q", got)
	}
	if got := Summarize(nil); got != (LatencySummary{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", got)
	}
}

func TestFormatNumbers(t *testing.T) {
	tests := []struct{ got, want string }{
		{fmtCount(0), "0"},
		{fmtCount(999), "999"},
		{fmtCount(1000), "1,000"},
		{fmtCount(83512), "83,512"},
		{fmtCount(1234567), "1,234,567"},
		{fmtCount(-4200), "-4,200"},
		{fmtRate(2999.6), "3,000/s"},
		{fmtMS(420 * time.Microsecond), "0.42"},
		{fmtMS(ms(14.36)), "14.4"},
		{fmtMS(ms(317.2)), "317"},
		{fmtMiB(300 << 20), "300 MiB"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	rows := []Row{
		{Figure: "raw publish", Measured: "83,500 msgs/s", Verdict: Info, Note: "100,000 msgs"},
		{Figure: "pipeline, 1 aggregator", Measured: "3,000/s = 0.036 × raw", Baseline: "83,500 msgs/s",
			Target: "≥ 0.20 × raw", Verdict: Missed, Note: "one input at a time"},
		{Figure: "latency p50/p99/max", Measured: "1.00 / 5.00 / 9.00 ms", Baseline: "0.1 / 0.3 / 1 ms",
			Target: "p99 ≤ 10 ms", Verdict: Met},
	}
	rows = append(rows, failedRows([]string{"takeover"}, []string{"≤ 10 s"}, errors.New("nats-server died"))...)
	var b strings.Builder
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")

	// Header, rule and one line per row, all of the same width in runes
	// (the ≥ and × are one column each), columns separated at the same
	// positions.
	table := lines[:2+len(rows)]
	width := utf8.RuneCountInString(strings.TrimRight(table[1], " "))
	sep := runeIndexes(table[1], '+')
	if len(sep) != 4 {
		t.Fatalf("rule %q: want 4 column separators", table[1])
	}
	for _, l := range table {
		if l != table[1] {
			if got := runeIndexes(l, '|'); !equalInts(got, sep) {
				t.Errorf("line %q: separators at %v, want %v", l, got, sep)
			}
		}
		if w := utf8.RuneCountInString(l); w > width {
			t.Errorf("line %q is %d runes, wider than the rule (%d)", l, w, width)
		}
	}
	for _, want := range []string{
		"figure ", "| measured ", "| baseline (same run) ", "| target ", "| met?",
		"NO (missed)", "ERROR", "| yes",
		"MISSED  pipeline, 1 aggregator: measured 3,000/s = 0.036 × raw, target ≥ 0.20 × raw. one input at a time",
		"ERROR   takeover: nats-server died",
		"note    raw publish: 100,000 msgs",
		"1 target(s) missed, 1 figure(s) not measured",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Misses come before errors, errors before notes.
	if i, j, k := strings.Index(out, "MISSED"), strings.Index(out, "ERROR   "), strings.Index(out, "note "); !(i < j && j < k) {
		t.Errorf("want misses, then errors, then notes:\n%s", out)
	}
	// An info row without baseline or target shows dashes.
	if !strings.Contains(lines[2], "| -") {
		t.Errorf("info row %q: want dashes for empty cells", lines[2])
	}
}

func TestWriteTableAllMet(t *testing.T) {
	var b strings.Builder
	if err := WriteTable(&b, []Row{{Figure: "f", Measured: "1", Target: "≤ 2", Verdict: Met}}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(b.String(), "every target with a measurement was met\n") {
		t.Errorf("got:\n%s", b.String())
	}
}

func runeIndexes(s string, r rune) []int {
	var out []int
	i := 0
	for _, c := range s {
		if c == r {
			out = append(out, i)
		}
		i++
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOrderRowsAndFigureOf(t *testing.T) {
	figs := []string{"alpha", "beta", "gamma"}
	rows := orderRows([]Row{{Figure: "gamma"}, {Figure: "alpha @ 1,000/s"}, {Figure: "beta"}}, figs)
	var got []string
	for _, r := range rows {
		got = append(got, figureOf(r.Figure, figs))
	}
	if strings.Join(got, ",") != "alpha,beta,gamma" {
		t.Errorf("order = %v", got)
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	stat := "4242 (agg (x) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 12 0 100 0 0"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Errorf("cpu = %v, want %v (utime 250 + stime 75 ticks)", got, want)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 5"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q): want an error", bad)
		}
	}
}

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\taggregator\nVmPeak:\t  900000 kB\nVmHWM:\t  307200 kB\nVmRSS:\t  204800 kB\nThreads:\t9\n"
	m, err := parseStatusMemory(status)
	if err != nil {
		t.Fatal(err)
	}
	if m.HWM != 300<<20 || m.RSS != 200<<20 {
		t.Errorf("memory = %+v, want HWM 300 MiB, RSS 200 MiB", m)
	}
	if _, err := parseStatusMemory("Name:\tx\nVmRSS:\t1 kB\n"); err == nil {
		t.Error("missing VmHWM: want an error")
	}
	if _, err := parseStatusMemory("VmHWM:\t1 MB\nVmRSS:\t1 kB\n"); err == nil {
		t.Error("unit MB: want an error")
	}
}

// The workload is what the figures mean: check that it is realistic and
// well-formed, and that the aggregator would see each room in time order.
func TestWorkload(t *testing.T) {
	w := &Workload{Prefix: "t", Rooms: 3, Devices: 2, ExpiresMS: 3_600_000, BaseMS: 1_000_000}
	n := 2 * w.Rooms * w.StepsPerCycle() // two cycles
	lastTS := map[string]int64{}
	ids := map[string]bool{}
	kinds := map[string]int{}
	for i := range n {
		ev := w.Input(i)
		if ids[string(ev.EventID)] {
			t.Fatalf("input %d: duplicate event id %s", i, ev.EventID)
		}
		ids[string(ev.EventID)] = true
		if ev.OriginServerTS <= lastTS[string(ev.RoomID)] {
			t.Errorf("input %d: room %s goes back in time", i, ev.RoomID)
		}
		lastTS[string(ev.RoomID)] = ev.OriginServerTS
		var content map[string]any
		m, err := rawMsg(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != rawevent.RawSubject(ev.RoomID) || m.Header.Get("Nats-Msg-Id") != string(ev.EventID) {
			t.Errorf("input %d: subject %s, msg id %s", i, m.Subject, m.Header.Get("Nats-Msg-Id"))
		}
		back, err := rawevent.DecodeRaw(m.Data)
		if err != nil {
			t.Fatalf("input %d does not decode: %v", i, err)
		}
		if err := json.Unmarshal(back.Content, &content); err != nil {
			t.Fatalf("input %d content: %v", i, err)
		}
		switch {
		case len(content) == 0:
			kinds["leave"]++
		case content["created_ts"] != nil:
			kinds["refresh"]++
			if int64(content["expires"].(float64)) <= w.ExpiresMS {
				t.Errorf("refresh %s does not extend the expiry", ev.EventID)
			}
		default:
			kinds["join"]++
		}
	}
	each := n / 3
	if kinds["join"] != each || kinds["refresh"] != each || kinds["leave"] != each {
		t.Errorf("kinds = %v, want %d of each", kinds, each)
	}
	// The first Rooms*Devices inputs are joins of distinct members (the live
	// figure relies on it).
	seen := map[string]bool{}
	for i := range w.Rooms * w.Devices {
		ev := w.Input(i)
		key := string(ev.RoomID) + *ev.StateKey
		if strings.Contains(string(ev.Content), "created_ts") || string(ev.Content) == "{}" || seen[key] {
			t.Fatalf("input %d (%s) is not the join of a new member", i, ev.EventID)
		}
		seen[key] = true
	}
	// A refresh keeps the membership's created_ts: the join's timestamp.
	j, r := w.Join(1, 1, 0), w.Refresh(1, 1, 0, 5)
	var rc map[string]any
	if err := json.Unmarshal(r.Content, &rc); err != nil {
		t.Fatal(err)
	}
	if int64(rc["created_ts"].(float64)) != j.OriginServerTS || r.OriginServerTS <= j.OriginServerTS {
		t.Errorf("refresh created_ts %v / ts %d, join ts %d", rc["created_ts"], r.OriginServerTS, j.OriginServerTS)
	}
}

func TestLatencyProbe(t *testing.T) {
	w := &Workload{Prefix: "p", Rooms: 1, Devices: 2, ExpiresMS: 3_600_000, BaseMS: 1}
	p := newLatencyProbe()
	t0 := time.Unix(100, 0)
	join, leave := w.Join(0, 1, 0), w.Leave(0, 1, 0)
	p.published(&join, t0)
	p.published(&leave, t0.Add(time.Second))
	member := &events.Member{UserID: join.Sender, DeviceID: "DEV00001XYZ", EventID: join.EventID}
	p.received(&events.SessionEvent{Kind: events.KindSessionStarted, RoomID: join.RoomID, Member: member}, t0.Add(2*time.Millisecond))
	// A second event of the same input (member_joined after session_started)
	// is not a second sample.
	p.received(&events.SessionEvent{Kind: events.KindMemberJoined, RoomID: join.RoomID, Member: member}, t0.Add(3*time.Millisecond))
	p.received(&events.SessionEvent{Kind: events.KindMemberLeft, RoomID: join.RoomID, Member: member}, t0.Add(time.Second+5*time.Millisecond))
	p.received(&events.SessionEvent{Kind: events.KindSessionEnded, RoomID: join.RoomID}, t0.Add(time.Second+6*time.Millisecond))
	got := p.result()
	if len(got) != 2 || got[0] != 2*time.Millisecond || got[1] != 5*time.Millisecond {
		t.Errorf("samples = %v, want [2ms 5ms]", got)
	}
}

func TestShorten(t *testing.T) {
	if got := shorten("abcdefghij", 3, 3); got != "abc…hij" {
		t.Errorf("shorten = %q", got)
	}
	if got := shorten("abcdefg", 3, 3); got != "abcdefg" {
		t.Errorf("short strings stay whole, got %q", got)
	}
}

func TestOptionsValidate(t *testing.T) {
	o := DefaultOptions()
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	o.Quick()
	if err := o.Validate(); err != nil {
		t.Fatalf("quick: %v", err)
	}
	o.Partitions, o.Refreshes, o.SteadyDuration = 0, -1, time.Millisecond
	err := o.Validate()
	for _, want := range []string{"partitions 0", "refreshes -1", "steady 1ms"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
}

// A scenario that cannot run still yields a row per figure, saying why, and
// the others still run: the table always shows every figure.
func TestRunReportsEveryFigureWhenStepsFail(t *testing.T) {
	o := DefaultOptions()
	o.WorkDir = t.TempDir()
	o.Bins = Binaries{NATSServer: "/nonexistent/nats-server", Aggregator: "/nonexistent/aggregator"}
	rep, err := Run(context.Background(), o, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, s := range Scenarios() {
		if s.Name != "raw" { // part of pipeline in a full run
			want = append(want, s.Figures...)
		}
	}
	if len(rep.Rows) != len(want) {
		t.Fatalf("%d rows, want %d (one per figure)", len(rep.Rows), len(want))
	}
	for i, r := range rep.Rows {
		if r.Figure != want[i] || r.Verdict != Failed || !strings.Contains(r.Note, "start nats-server") {
			t.Errorf("row %d = %+v, want figure %q failed because nats-server could not start", i, r, want[i])
		}
	}
	if len(rep.Load) != len(Scenarios())-1 {
		t.Errorf("load averages %v: want one per scenario run", rep.Load)
	}
	if _, err := Run(context.Background(), o, []string{"nope"}); err == nil || !strings.Contains(err.Error(), `unknown scenario "nope"`) {
		t.Errorf("unknown scenario: err = %v", err)
	}
}
