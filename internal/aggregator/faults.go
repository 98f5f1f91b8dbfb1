package aggregator

import (
	"sync"

	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"
)

// EnvStopAfterCommit names a room: the first time the process has committed
// that room, and before it carries out the commit's effects, it stops itself
// with SIGSTOP, as a pod stalls (a long GC pause, a frozen node). The
// process tests of fencing set it; it is never set in a deployment, and a
// process without it runs no fault code.
const EnvStopAfterCommit = "RTC_AGGREGATOR_TEST_SIGSTOP_AFTER_COMMIT"

// faultHooks are the fault-injection hooks the environment asks for.
func faultHooks(getenv func(string) string, log *zap.Logger) hooks {
	room := id.RoomID(getenv(EnvStopAfterCommit))
	if room == "" {
		return hooks{}
	}
	log.Warn("fault injection: the process stops itself after committing a room", zap.String("room", string(room)))
	var once sync.Once
	return hooks{afterCommit: func(_ int, r id.RoomID, lastIn uint64) {
		if r != room {
			return
		}
		once.Do(func() {
			log.Warn("fault injection: SIGSTOP after commit", zap.String("room", string(r)), zap.Uint64("last_in", lastIn))
			_ = log.Sync()
			stopSelf()
		})
	}}
}
