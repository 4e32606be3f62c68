package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tierlock/tierlock/internal/tools/procstat"
)

// cpuSeconds is the user plus system CPU time of process pid, in seconds.
func cpuSeconds(pid int) (float64, error) {
	d, err := procstat.CPU(pid)
	return d.Seconds(), err
}

// peakRSSMiB is the peak resident memory of pid since it started or since resetPeakRSS
// (VmHWM in /proc/<pid>/status).
func peakRSSMiB(pid int) (float64, error) { return statusMiB(pid, "VmHWM") }

// rssMiB is pid's resident memory now (VmRSS).
func rssMiB(pid int) (float64, error) { return statusMiB(pid, "VmRSS") }

// statusMiB reads field, a size in kB, from /proc/<pid>/status, in MiB.
func statusMiB(pid int, field string) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("fleet: %s of %d: %w", field, pid, err)
	}
	defer f.Close()
	return parseStatusMiB(f, field)
}

func parseStatusMiB(r io.Reader, field string) (float64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("fleet: %s %q: not in kB", field, rest)
		}
		kb, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("fleet: %s %q: %w", field, rest, err)
		}
		return kb / 1024, nil
	}
	return 0, fmt.Errorf("fleet: no %s in /proc status", field)
}

// resetPeakRSS starts pid's peak resident memory afresh (clear_refs 5, Linux 4.0 and later), so
// that each workload's peak is its own. It is best effort: an error leaves the peak since the
// start, which the report then overstates, never understates.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// selfCPUSeconds is this process's user plus system CPU time: the simulated hosts' (the proxy
// runs in a process of its own).
func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// raftApplyMetric is Consul's count of log entries handed to Raft (go-metrics' "raft.apply",
// in the agent's Prometheus output as consul_raft_apply).
const raftApplyMetric = "consul_raft_apply"

// raftApplies reads the agent's cumulative count of Raft applies. It needs the agent's
// telemetry to keep Prometheus metrics (prometheus_retention_time).
func raftApplies(ctx context.Context, addr string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/agent/metrics?format=prometheus", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("fleet: agent metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("fleet: agent metrics: %s", resp.Status)
	}
	return parsePromCounter(resp.Body, raftApplyMetric)
}

// parsePromCounter returns the value of the sample named name (with or without labels) in a
// Prometheus text exposition; the sum if it has several label sets.
func parsePromCounter(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	found, sum := false, 0.0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if base, _, _ := strings.Cut(metric, "{"); base != name {
			continue
		}
		if f := strings.Fields(value); len(f) > 0 {
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, fmt.Errorf("fleet: metric %s: %q: %w", name, line, err)
			}
			found, sum = true, sum+v
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("fleet: metric %s not in the agent's output", name)
	}
	return sum, nil
}
