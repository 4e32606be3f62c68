package lock

import "errors"

// Errors callers branch on. Compare with errors.Is: they are usually wrapped with detail.
var (
	// ErrDisabled means max_concurrent is 0: nothing may run in the tier.
	ErrDisabled = errors.New("lock: tier disabled")
	// ErrNoSlot means no slot became free before the wait ended.
	ErrNoSlot = errors.New("lock: no free slot")
	// ErrInvalidConfig means a stored value of the tier cannot be trusted; nothing was written.
	ErrInvalidConfig = errors.New("lock: invalid stored value")
	// ErrNotHeld means the holder has no slot (or it belongs to another run of that holder).
	ErrNotHeld = errors.New("lock: slot not held")
	// ErrRejected means Consul refused a request for a reason other than a lost race, such as
	// a missing ACL permission: a write refused, or a read whose results its ACLs filtered.
	ErrRejected = errors.New("lock: refused by consul")
	// ErrTooManyKeys means a tier has more keys than a read fetches (MaxTierKeys), or key
	// names that come to more than a listing reads: junk, refused rather than read.
	ErrTooManyKeys = errors.New("lock: too many keys")
)
