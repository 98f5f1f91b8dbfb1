package api_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds a Chromium to drive: $RTC_CHROMIUM, or Debian's. In CI
// (CI=true, where .ci/run installs it) a missing browser fails the test;
// elsewhere the test is skipped.
func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("RTC_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium (apt-get install chromium, or set RTC_CHROMIUM): the browser test must run in CI")
	}
	t.Skip("no Chromium (apt-get install chromium, or set RTC_CHROMIUM)")
	return ""
}

// TestLiveCallsPage drives the live-calls page in headless Chromium against
// the real pipeline: a call the test starts appears within a second, a join
// and a leave update it, and the ended call moves to the history.
func TestLiveCallsPage(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	exe := chromiumPath(t)
	p := startPipeline(t, nil)

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		// Without these Chromium reaches for Google's hosts, which a closed
		// network refuses.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1200, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	// waitJS polls a JavaScript condition every 20 ms.
	waitJS := func(what, cond string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if ok {
				return time.Since(start)
			}
			if time.Since(start) > within {
				html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main"))
				t.Fatalf("%s: not within %s; page:\n%s", what, within, html)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	call := fmt.Sprintf(`document.querySelector('li.call[data-room-id=%q]')`, string(roomA))
	members := call + `.querySelectorAll('li.member')`

	if err := chromedp.Do(ctx, chromedp.Navigate(p.base+"/#token="+tokenAll)); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	waitJS("the event stream is live", `document.getElementById('status').dataset.state === 'live'`, 15*time.Second)
	waitJS("no call yet", `document.querySelectorAll('li.call').length === 0 && !document.getElementById('empty').hidden`, time.Second)

	start := time.Now()
	p.join(roomA, idU("@alice:hs.test"), "A1")
	waitJS("alice's call on the page", call+` !== null`, 5*time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("the call appeared %s after the join, want within 1s", took)
	} else {
		t.Logf("the call appeared %s after the join was published", took)
	}
	waitJS("alice listed", members+`.length === 1 && `+call+`.querySelector('li.member').dataset.userId === '@alice:hs.test'`, time.Second)

	p.join(roomA, idU("@carol:hs.test"), "C1")
	waitJS("carol joined", members+`.length === 2 && `+call+`.dataset.participants === '2'`, 2*time.Second)
	p.join(roomB, idU("@bob:hs.test"), "B1")
	waitJS("bob's call too", `document.querySelectorAll('li.call').length === 2 && /2 calls, 3 participants/.test(document.getElementById('totals').textContent)`, 2*time.Second)
	// The running duration ticks (m:ss), and the chart has both series.
	waitJS("a running duration", call+`.querySelector('.duration').textContent.match(/^\d+:\d\d$/) !== null`, 2*time.Second)
	// The chart's scale reaches the 3 participants; both series are drawn.
	waitJS("the chart", `document.getElementById('chart').dataset.max === '3' && document.querySelector('#chart path[data-series=calls]').getAttribute('d').includes('H') && document.querySelector('#chart path[data-series=participants]').getAttribute('d').includes('H')`, 3*time.Second)
	time.Sleep(1500 * time.Millisecond) // a running duration past 0:00 on the screenshot
	waitJS("a duration past 0:00", call+`.querySelector('.duration').textContent !== '0:00'`, 2*time.Second)

	shot := filepath.Join(t.TempDir(), "live-calls.png")
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if dir := os.Getenv("RTC_SCREENSHOT_DIR"); dir != "" { // to keep one after the test
		_ = os.WriteFile(filepath.Join(dir, "live-calls.png"), png, 0o644)
	}

	p.leave(roomA, idU("@alice:hs.test"), "A1")
	waitJS("alice left", members+`.length === 1 && `+call+`.querySelector('li.member').dataset.userId === '@carol:hs.test'`, 2*time.Second)
	p.leave(roomA, idU("@carol:hs.test"), "C1")
	waitJS("room A's call ended", call+` === null`, 2*time.Second)
	waitJS("and is in the history", fmt.Sprintf(`[...document.querySelectorAll('#history tr')].some(r => r.firstChild.textContent === %q)`, string(roomA)), 2*time.Second)

	text, err := chromedp.Run(ctx, chromedp.Text("body"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "1 call, 1 participant") {
		t.Errorf("totals after the end: %q", text)
	}
}
