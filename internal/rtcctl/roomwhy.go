package rtcctl

import (
	"fmt"
	"strings"

	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// WhyNotCounted says why a register does not make members, as the reducer
// decides it at the room's clock: its kind (a leave, a redaction, content
// that failed validation), else for each of its claims the reducer's
// reasons (expired, its user left the room, its slot closed) or that
// another claim of the same device counts instead. "" when every claim
// counts. It mirrors the reducer's eligibility rule; the reducer keeps no
// per-claim verdict in the state.
func WhyNotCounted(st *rtc.RoomState, r *rtc.Register) string {
	var why []string
	switch r.Kind {
	case rtc.RegisterLeave:
		why = append(why, "a leave (no membership)")
	case rtc.RegisterRedacted:
		why = append(why, "redacted")
	case rtc.RegisterInvalid:
		if r.WhyCode == "" {
			why = append(why, "invalid content")
		}
	}
	if r.WhyCode != "" {
		why = append(why, string(r.WhyCode)+": "+r.Why)
	}
	for i := range r.Claims {
		c := &r.Claims[i]
		w := claimWhy(st, c)
		if w == "" {
			continue
		}
		if len(r.Claims) > 1 {
			w = fmt.Sprintf("%s/%s: %s", c.User, c.Device, w)
		}
		why = append(why, w)
	}
	return strings.Join(why, "; ")
}

// claimWhy is why one claim does not count at the room's clock ("" when it
// does).
func claimWhy(st *rtc.RoomState, c *rtc.Claim) string {
	var why []string
	if c.Deadline <= st.Clock {
		why = append(why, "expired at "+fmtMS(c.Deadline))
	}
	if rm, ok := st.RoomMembers[c.User]; ok && rm.Membership != "join" {
		why = append(why, fmt.Sprintf("its user left the room (%s at %s)", rm.Membership, fmtMS(rm.TS)))
	}
	if sl, ok := st.Slots[rtc.SlotID(c.App, c.CallID)]; ok && !sl.Open {
		why = append(why, "its slot "+rtc.SlotID(c.App, c.CallID)+" closed at "+fmtMS(sl.TS))
	}
	if len(why) > 0 {
		return strings.Join(why, ", ")
	}
	// Eligible: it counts unless another claim of the same device (a newer
	// membership) is the member.
	for _, s := range st.Sessions {
		if s.App != c.App || s.CallID != c.CallID {
			continue
		}
		for _, m := range s.Members {
			if m.Member.UserID != c.User || m.MemberKey != c.MemberKey {
				continue
			}
			if m.Member.EventID == c.EventID && m.Member.MembershipID == c.MembershipID {
				return ""
			}
			return fmt.Sprintf("superseded by %s (membership %s)", m.Member.EventID, m.Member.MembershipID)
		}
	}
	return "not a member of any session"
}
