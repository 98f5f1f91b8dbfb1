package rawevent

import "maunium.net/go/mautrix/event"

// The Matrix event types that carry call membership, and the room events the
// aggregator needs besides them. mautrix has no call-member types, so they are
// declared here, in mautrix's style.
var (
	// TypeCallMember is what Element Call sends today (per-device session form
	// and the legacy memberships array).
	TypeCallMember = event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}
	// TypeRTCMember is the MSC4143 member: a state event in the June 2024 seed
	// format, or a sticky timeline event (no state key) in the newest format.
	TypeRTCMember = event.Type{Type: "m.rtc.member", Class: event.StateEventType}
	// TypeRTCMemberUnstable is the sticky member as js-sdk and Element Call send it.
	TypeRTCMemberUnstable = event.Type{Type: "org.matrix.msc4143.rtc.member", Class: event.MessageEventType}
	// TypeRTCSlot and TypeRTCSlotUnstable open and close a slot (MSC4143 head).
	TypeRTCSlot         = event.Type{Type: "m.rtc.slot", Class: event.StateEventType}
	TypeRTCSlotUnstable = event.Type{Type: "org.matrix.msc4143.rtc.slot", Class: event.StateEventType}

	TypeRoomMember = event.StateMember
	TypeRedaction  = event.EventRedaction
)

// ForwardedTypes are the event types the ingest forwards to RTC_RAW; the
// ingest drops every other type at the door.
var ForwardedTypes = []event.Type{
	TypeCallMember, TypeRTCMember, TypeRTCMemberUnstable,
	TypeRTCSlot, TypeRTCSlotUnstable, TypeRoomMember, TypeRedaction,
}

// IsForwarded reports whether an event of this type is of interest to the
// aggregator.
func IsForwarded(eventType string) bool {
	for _, t := range ForwardedTypes {
		if t.Type == eventType {
			return true
		}
	}
	return false
}
