package natsconn

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MinServerVersion is the oldest nats-server with message schedules (@at).
const MinServerVersion = "2.12.0"

// ErrServerTooOld is returned by CheckServerVersion.
var ErrServerTooOld = errors.New("nats-server too old")

// CheckServerVersion refuses servers older than MinServerVersion, which lack
// the message schedules the durable timers are built on.
func CheckServerVersion(version string) error {
	if !versionAtLeast(version, MinServerVersion) {
		return fmt.Errorf("%w: connected to nats-server %q, rtc-sessions needs %s or newer (message schedules)",
			ErrServerTooOld, version, MinServerVersion)
	}
	return nil
}

func versionAtLeast(have, want string) bool {
	parse := func(v string) (out [3]int, ok bool) {
		v = strings.TrimPrefix(v, "v")
		if i := strings.IndexAny(v, "-+"); i >= 0 {
			v = v[:i]
		}
		parts := strings.Split(v, ".")
		if len(parts) != 3 {
			return out, false
		}
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil {
				return out, false
			}
			out[i] = n
		}
		return out, true
	}
	h, ok1 := parse(have)
	w, ok2 := parse(want)
	if !ok1 || !ok2 {
		return false
	}
	for i := 0; i < 3; i++ {
		if h[i] != w[i] {
			return h[i] > w[i]
		}
	}
	return true
}
