package outbox

import "fmt"

// Status is the delivery status of one recipient or, as the worst of its
// recipients' statuses, of one answer (SPEC section 2).
type Status string

// The statuses of SPEC section 2.
const (
	// StatusScheduled: accepted by the relay, not yet accepted upstream.
	StatusScheduled Status = "scheduled"
	// StatusSent: the upstream server accepted it (250 after DATA).
	StatusSent Status = "sent"
	// StatusDelayed: still queued delay_after after acceptance, or a DSN
	// with Action: delayed came back.
	StatusDelayed Status = "delayed"
	// StatusNotDelivered: rejected permanently upstream, retries expired,
	// or a failure DSN came back.
	StatusNotDelivered Status = "not_delivered"
	// StatusDelivered: a success DSN confirmed final delivery.
	StatusDelivered Status = "delivered"
)

// Statuses lists every status, in the order of SPEC section 2.
var Statuses = []Status{StatusScheduled, StatusSent, StatusDelayed, StatusNotDelivered, StatusDelivered}

// labels are the texts shown to agents by the delivery status indicator.
var labels = map[Status]string{
	StatusScheduled:    "Answer scheduled",
	StatusSent:         "Answer sent",
	StatusDelayed:      "Answer delayed",
	StatusNotDelivered: "Answer not delivered",
	StatusDelivered:    "Answer delivered",
}

// severity orders statuses for Worst: the higher, the worse.
var severity = map[Status]int{
	StatusDelivered:    1,
	StatusSent:         2,
	StatusScheduled:    3,
	StatusDelayed:      4,
	StatusNotDelivered: 5,
}

// transitions is the table of legal recipient status changes (SPEC section 2).
//
// One addition to the SPEC's table: delayed→delivered. A recipient for which
// a delay DSN came back (sent→delayed) and then a success DSN is delivered;
// without this edge its status would stay "delayed" for ever. The
// delayed→scheduled and sent→scheduled edges do not exist: only an explicit
// resend moves not_delivered back to scheduled.
var transitions = map[Status][]Status{
	StatusScheduled:    {StatusSent, StatusDelayed, StatusNotDelivered},
	StatusDelayed:      {StatusSent, StatusNotDelivered, StatusDelivered},
	StatusSent:         {StatusDelayed, StatusNotDelivered, StatusDelivered},
	StatusDelivered:    {StatusNotDelivered},
	StatusNotDelivered: {StatusScheduled}, // by Resend only
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	_, ok := severity[s]
	return ok
}

// Label is the text the indicator shows agents, such as "Answer sent".
func (s Status) Label() string { return labels[s] }

// Pending reports whether a recipient in status s may still wait for the
// upstream to accept it. A delayed recipient waits only if the upstream has
// not taken it yet: Recipient.Pending tells the two apart.
func (s Status) Pending() bool { return s == StatusScheduled || s == StatusDelayed }

// CanTransition reports whether a recipient may move from one status to
// another. Moving to the same status is not a transition.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Worst returns the worst of the given statuses, the answer's status for its
// recipients' statuses. It returns "" for no statuses.
func Worst(statuses ...Status) Status {
	var worst Status
	for _, s := range statuses {
		if severity[s] > severity[worst] {
			worst = s
		}
	}
	return worst
}

// ParseStatus returns the status named s, or an error naming the bad value.
func ParseStatus(s string) (Status, error) {
	st := Status(s)
	if !st.Valid() {
		return "", fmt.Errorf("outbox: unknown status %q", s)
	}
	return st, nil
}
