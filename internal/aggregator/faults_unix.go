//go:build unix

package aggregator

import (
	"os"
	"syscall"
)

// stopSelf stops the process until it receives SIGCONT.
func stopSelf() { _ = syscall.Kill(os.Getpid(), syscall.SIGSTOP) }
