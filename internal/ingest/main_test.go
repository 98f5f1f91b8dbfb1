package ingest

import (
	"os"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/proctest"
)

// TestMain removes the binaries proctest built for TestIngestProcessMemoryFlood.
func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
