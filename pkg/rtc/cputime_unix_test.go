//go:build unix

package rtc

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) the process has used: unlike
// wall time, it does not count time spent waiting for a core that other
// processes hold, so ratios of it stay meaningful on a shared machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
