// Package ctlapi is the control-plane contract between rtcctl and the
// services: the NATS subjects rtcctl sends requests to and the JSON bodies
// of the requests and replies. It has no dependencies on the services, so
// that rtcctl links neither the ingest nor nats-server.
package ctlapi

import "maunium.net/go/mautrix/id"

// ReconcileSubject is where `rtcctl reconcile` sends its requests (NATS
// request/reply, JSON ReconcileRequest → ReconcileReply). Ingest replicas
// subscribe in the queue group ReconcileQueue: one of them answers.
//
// An ingest that does not reconcile on demand (reconcile.on_demand false,
// or no homeserver it can read room state from) still answers, in the queue
// group ReconcileOffQueue, with Off set: rtcctl then names the reason
// instead of finding no responder. Its own queue group keeps every request
// going to one replica that does reconcile, if any.
const (
	ReconcileSubject  = "rtc.ctl.ingest.reconcile"
	ReconcileQueue    = "rtc-ingest"
	ReconcileOffQueue = "rtc-ingest-off"
)

// ReconcileRequest asks the ingest to reconcile one room now.
type ReconcileRequest struct {
	RoomID id.RoomID `json:"room_id"`
	// Homeserver restricts the read to one configured homeserver; empty:
	// the homeservers that delivered the room's call events first, then the
	// others, until one can read the room.
	Homeserver string `json:"homeserver,omitempty"`
}

// ReconcileReply answers a ReconcileRequest.
type ReconcileReply struct {
	RoomID id.RoomID `json:"room_id"`
	// Attempts lists each homeserver asked, in order; the last one
	// succeeded unless every one failed.
	Attempts []ReconcileResult `json:"attempts"`
	Error    string            `json:"error,omitempty"` // a bad request, or no homeserver could read the room
	// Off, set by an ingest that does not reconcile on demand, says why
	// (Error says it too); the request did nothing.
	Off string `json:"off,omitempty"`
}

// ReconcileResult is what reading one room from one homeserver did.
type ReconcileResult struct {
	Homeserver string `json:"homeserver"`
	Events     int    `json:"events"`     // state events published: call members, slots, their senders' m.room.member
	Stored     int    `json:"stored"`     // of which new in RTC_RAW (the rest were duplicates within its window)
	Duplicates int    `json:"duplicates"` // already in RTC_RAW
	Reason     string `json:"reason,omitempty"`
	Error      string `json:"error,omitempty"`
}
