package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// heapWatch keeps the Consul agent's heap profile taken at its largest resident memory, for
// finding where a workload's peak goes. The agent must run with enable_debug (Config.HeapTo
// adds it); the profile is Go's (inuse_space at the last GC before it was taken).
type heapWatch struct {
	addr, path string
	pid        int
	best       float64 // MiB resident when the kept profile was taken
}

// run samples every interval until ctx ends.
func (h *heapWatch) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rss, err := rssMiB(h.pid)
			if err != nil || rss <= h.best*1.05 {
				continue
			}
			if err := h.take(ctx); err == nil {
				h.best = rss
			}
		}
	}
}

func (h *heapWatch) take(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.addr+"/debug/pprof/heap", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fleet: heap profile: %s", resp.Status)
	}
	f, err := os.Create(h.path + ".tmp")
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(h.path+".tmp", h.path)
}
