// Package procstat reads a process's CPU time from /proc, for the benchmarks, which measure
// where a workload's CPU goes (the Consul agent, the proxy, the hosts).
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux ABI Go
// supports (the kernel converts to it whatever its own HZ).
const clockTicks = 100

// CPU is the user plus system CPU time of process pid, from /proc/<pid>/stat.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("procstat: cpu of %d: %w", pid, err)
	}
	return ParseCPU(string(b))
}

// ParseCPU reads utime and stime (fields 14 and 15) from a /proc/<pid>/stat line. The
// command name (field 2) may hold blanks and parentheses, so fields count from its last ')'.
func ParseCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("procstat: /proc stat %q: no command name", stat)
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("procstat: /proc stat %q: too few fields", stat)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("procstat: /proc stat %q: bad times %q %q", stat, f[11], f[12])
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
