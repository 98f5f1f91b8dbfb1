package bench

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
)

// TestMeasureHistory runs the history figure small on an embedded server:
// RTC_HISTORY fills from RTC_EVENTS, and the index and the scan find the
// same sessions of every room asked (measureHistory checks it).
func TestMeasureHistory(t *testing.T) {
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: t.TempDir(), Port: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	c, err := connect(ns.ClientURL(), "history-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := measureHistory(ctx, c, 2000, 5, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if f.Queries != 5 || f.Events != 12000 || f.Index.Max <= 0 || f.Scan.Max <= 0 {
		t.Errorf("figures %+v", f)
	}
}
