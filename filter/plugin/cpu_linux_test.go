package plugin

import (
	"syscall"
	"time"
)

// threadCPU is the calling thread's CPU time (the caller locks its OS
// thread). Unlike wall time it does not count what other processes take on
// a shared machine.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
