package outbox

import "errors"

// Errors returned by Store implementations and the state machine. Callers
// test for them with errors.Is; engines may wrap them with detail.
var (
	// ErrNotFound: no answer (or report, dead letter) has that id or key.
	// The API maps it to 404.
	ErrNotFound = errors.New("outbox: not found")
	// ErrExpired: the answer existed but its details were deleted after
	// retention_days. The API maps it to 410 Gone.
	ErrExpired = errors.New("outbox: expired after retention")
	// ErrIllegalTransition: the change is not in the transition table. The
	// record is left as it was.
	ErrIllegalTransition = errors.New("outbox: illegal status transition")
	// ErrLeaseLost: the lease expired and the answer was leased again, or
	// was released. The outcome was not recorded.
	ErrLeaseLost = errors.New("outbox: lease lost")
	// ErrDuplicate: the same report (by id) was already recorded; nothing
	// changed.
	ErrDuplicate = errors.New("outbox: duplicate")
	// ErrExists: an answer with that id already exists.
	ErrExists = errors.New("outbox: answer exists")
	// ErrInvalid: the input breaks the contract (no recipients, an empty
	// id, a temporary outcome without a next attempt time, ...).
	ErrInvalid = errors.New("outbox: invalid input")
	// ErrUnavailable wraps every failure to reach or write the backing
	// store. The SMTP side turns it into 451; nothing was half-written.
	ErrUnavailable = errors.New("outbox: store unavailable")
)
