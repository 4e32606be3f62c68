package schema

// Record is the queue entry as Evict's match sees it: what the entry says of its holder, and
// StartedAt the time it joined the queue.
func (w Waiter) Record() Record {
	return Record{Holder: w.Holder, RunID: w.RunID, InstanceID: w.InstanceID, Node: w.Node, StartedAt: w.Since}
}
