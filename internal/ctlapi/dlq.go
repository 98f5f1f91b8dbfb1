package ctlapi

// Headers of a message in RTC_DLQ, written by the aggregator and read by
// `rtcctl dlq`. The body is the original input.
const (
	HeaderDLQReason   = "Rtc-Dlq-Reason"   // decode, apply, store, room_state, or an input-check reason
	HeaderDLQError    = "Rtc-Dlq-Error"    // the error text (one line)
	HeaderDLQPart     = "Rtc-Partition"    // the partition number
	HeaderDLQSeq      = "Rtc-Stream-Seq"   // the input's RTC_RAW sequence
	HeaderDLQSubject  = "Rtc-Orig-Subject" // the input's RTC_RAW subject
	HeaderDLQAttempts = "Rtc-Attempts"     // attempts before giving up

	// HeaderRedrivenFrom marks an input re-driven by rtcctl: "RTC_DLQ #<seq>".
	HeaderRedrivenFrom = "Rtc-Redriven-From"
)

// Heartbeat is the value of an aggregator worker's key in rtc_workers
// (JSON): when it started and the pin id it holds on each partition it
// consumes, by partition number. `rtcctl workers` reads it.
type Heartbeat struct {
	Started string            `json:"started"`
	Pins    map[string]string `json:"pins,omitempty"`
}
