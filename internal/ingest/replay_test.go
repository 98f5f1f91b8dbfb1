package ingest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

func TestReplay(t *testing.T) {
	e := newEnv(t)
	lines := []string{
		memberEvent("$r1", "!r:hs1.test", "@a:hs1.test", "A", 1700000000000),
		`{"type":"org.matrix.msc3401.call.member","state_key":"x"`, // line 2: truncated
		messageEvent("$msg", "!r:hs1.test", "@a:hs1.test"),         // filtered
		"",
		strings.TrimSuffix(memberEvent("$r2", "!r:hs1.test", "@b:hs1.test", "B", 1700000001000), "}") + `,"received_at":1700000005000}`,
		memberEvent("$r1", "!r:hs1.test", "@a:hs1.test", "A", 1700000000000), // duplicate
		`{"type":"m.rtc.member","event_id":"nope"}`,                          // line 7: bad envelope
	}
	var report bytes.Buffer
	st, err := Replay(context.Background(), strings.NewReader(strings.Join(lines, "\n")), "f.jsonl", e.pub, "backfill", nil, &report, e.m, e.log)
	if !errors.Is(err, ErrMalformedLines) {
		t.Fatalf("err %v, want ErrMalformedLines", err)
	}
	if st.Lines != 7 || st.Stored != 2 || st.Duplicates != 1 || st.Filtered != 1 || st.Malformed != 2 {
		t.Errorf("stats %+v", st)
	}
	for _, want := range []string{"f.jsonl:2: ", "f.jsonl:7: "} {
		if !strings.Contains(report.String(), want) {
			t.Errorf("report %q lacks %q", report.String(), want)
		}
	}
	got := rawContents(t, e.url)
	assertStored(t, got, map[string]string{"$r1": "backfill", "$r2": "backfill"})
	for _, ev := range got {
		want := ev.OriginServerTS
		if ev.EventID == "$r2" {
			want = 1700000005000
		}
		if ev.Source != rawevent.SourceReplay || ev.ReceivedAt != want {
			t.Errorf("%s: source %q received_at %d, want %d", ev.EventID, ev.Source, ev.ReceivedAt, want)
		}
	}
}

func TestReplayCommandExitStatus(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	bad := filepath.Join(dir, "bad.jsonl")
	_ = os.WriteFile(good, []byte(memberEvent("$g", "!r:hs1.test", "@a:hs1.test", "A", 1700000000000)+"\n"), 0o600)
	_ = os.WriteFile(bad, []byte("{\n"), 0o600)
	t.Setenv("RTC_INGEST_NATS_URLS", e.url)
	t.Setenv("RTC_INGEST_TOPOLOGY_PARTITIONS", "4")
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"replay", good}, &out, &errb); code != 0 {
		t.Fatalf("good file: exit %d, stderr %s", code, errb.String())
	}
	if code := Main(context.Background(), []string{"replay", bad}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "bad.jsonl:1:") {
		t.Fatalf("bad file: exit %d, stderr %s", code, errb.String())
	}
}
