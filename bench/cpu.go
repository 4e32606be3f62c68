package main

import (
	"syscall"
	"time"

	"github.com/tierlock/tierlock/internal/tools/procstat"
)

// Where a workload's CPU goes, so that the table can say what the machine could do at best:
// on a small machine the process-level harness is bound by CPU (every run starts at least a
// holder and a recorder process), and the efficiency it can reach is at most
// cores × ideal span ÷ CPU spent within the span.

// procCPU is the user plus system CPU time of process pid.
func procCPU(pid int) (time.Duration, error) { return procstat.CPU(pid) }

// rusageCPU is the user plus system CPU time of the harness itself (RUSAGE_SELF) or of its
// children it has waited for, and theirs (RUSAGE_CHILDREN).
func rusageCPU(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
