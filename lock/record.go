package lock

// protocolOf is the protocol an entry or record needs: the oldest that hands it over right.
func protocolOf(mover bool) int {
	if mover {
		return moverProtocol
	}
	return 2
}

// clip keeps error messages readable when a stored value is large.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
