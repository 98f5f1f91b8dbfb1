package jsclient

import (
	"os"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
