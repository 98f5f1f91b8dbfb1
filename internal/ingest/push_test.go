package ingest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPushAsHomeservers plays a file through the appservice API the way the
// demo does: events of a room shared by two homeservers arrive from both and
// are stored once; --live rebases the timestamps (created_ts included).
func TestPushAsHomeservers(t *testing.T) {
	e := newEnv(t)
	srv := newAppserviceServer(t, e, e.pub, 1<<20)
	created := strings.Replace(memberEvent("$p3", "!r:hs1.test", "@alice:hs1.test", "AD", 1700000002000),
		`"expires":14400000`, `"expires":14400000,"created_ts":1700000000000`, 1)
	file := strings.Join([]string{
		memberEvent("$p1", "!r:hs1.test", "@alice:hs1.test", "AD", 1700000000000),
		memberEvent("$p2", "!r:hs1.test", "@bob:hs2.test", "BD", 1700000000100),
		created,
		messageEvent("$pm", "!r:hs1.test", "@bob:hs2.test"),
	}, "\n")
	var out bytes.Buffer
	start := time.UnixMilli(1800000000000)
	err := Push(context.Background(), strings.NewReader(file), PushOptions{URL: srv.URL,
		Tokens: map[string]string{"hs1.test": tokHS1, "hs2.test": tokHS2}, Live: true, Speed: 1000,
		RetryFor: time.Second, Out: &out, Now: func() time.Time { return start }})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "hs1.test→200 hs2.test→200") {
		t.Errorf("output:\n%s", out.String())
	}
	got := rawContents(t, e.url)
	assertStored(t, got, map[string]string{"$p1": "hs1", "$p2": "hs1", "$p3": "hs1"})
	shift := start.UnixMilli() - 1700000000000
	for _, ev := range got {
		if ev.OriginServerTS < start.UnixMilli() {
			t.Errorf("%s not rebased: %d", ev.EventID, ev.OriginServerTS)
		}
		if ev.EventID == "$p3" && !bytes.Contains(ev.Content, []byte(`"created_ts":1800000000000`)) {
			t.Errorf("created_ts not rebased by %d: %s", shift, ev.Content)
		}
	}
	// $p2 and $p3 went to both homeservers: hs2's copies were duplicates.
	if d := testutil.ToFloat64(e.m.Duplicates.WithLabelValues("hs2", "appservice")); d != 2 {
		t.Errorf("hs2 duplicates %v, want 2", d)
	}

	if err := Push(context.Background(), strings.NewReader(memberEvent("$x", "!q:x", "@a:unknown.test", "D", 1)),
		PushOptions{URL: srv.URL, Tokens: map[string]string{"hs1.test": tokHS1}}); err == nil {
		t.Error("an event of a homeserver without token was sent")
	}
}
