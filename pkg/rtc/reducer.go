package rtc

import "github.com/rtcsessions/rtc-sessions/pkg/events"

// Apply applies one input to the room state, in place, and returns the
// session events it causes. TEMPORARY STUB: being implemented.
func Apply(cfg Config, st *RoomState, in *events.RawEvent) Result {
	if in.ReceivedAt > st.Clock {
		st.Clock = in.ReceivedAt
	}
	return Result{}
}
