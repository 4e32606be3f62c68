// Package answercap is how a reader of Consul bounds the memory an answer may take: it puts a
// limit in the request's context (WithLimit), and an HTTP client that honours it (the one of
// internal/consulclient) fails the request with ErrTooLarge past that limit, rather than
// reading the whole answer. lock asks for it; any client may give it. It is a package of its
// own so that lock need not depend on the client.
package answercap

import (
	"context"
	"errors"
)

// ErrTooLarge is the error of a request whose answer exceeded the limit its context carries.
var ErrTooLarge = errors.New("consul client: answer too large")

type key struct{}

// WithLimit asks the client to read at most limit bytes of the answer to a request made with
// ctx, and to fail it with ErrTooLarge past that: a caller that fetches values in one request
// (a transaction's get-tree) bounds its memory so, and falls back to fetching in batches.
// Clients that do not honour it read the whole answer.
func WithLimit(ctx context.Context, limit int64) context.Context {
	return context.WithValue(ctx, key{}, limit)
}

// Limit is the limit ctx carries, if any.
func Limit(ctx context.Context) (int64, bool) {
	limit, ok := ctx.Value(key{}).(int64)
	return limit, ok
}
