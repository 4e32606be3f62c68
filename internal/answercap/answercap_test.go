package answercap_test

import (
	"context"
	"testing"

	"github.com/tierlock/tierlock/internal/answercap"
)

func TestLimit(t *testing.T) {
	if _, ok := answercap.Limit(context.Background()); ok {
		t.Error("a plain context carries a limit")
	}
	ctx := answercap.WithLimit(context.Background(), 4<<20)
	if n, ok := answercap.Limit(answercap.WithLimit(ctx, 1<<10)); !ok || n != 1<<10 {
		t.Errorf("Limit = %d, %v; want the innermost, 1024", n, ok)
	}
}
