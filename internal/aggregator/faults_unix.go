//go:build unix

package aggregator

import (
	"os"
	"syscall"
	"time"
)

// stopSelf stops the process until it receives SIGCONT. The stop of a
// multi-threaded process may take effect a moment after kill returns: the
// caller waits a little, so that nothing after the fault point runs before
// the process is stopped.
func stopSelf() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	time.Sleep(200 * time.Millisecond)
}
