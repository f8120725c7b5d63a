package kubetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// watchdog kills the given processes and removes dir if this test process
// dies without stopping them (a panic, a test timeout, a kill): a sh that
// polls for its parent once a second. envtest starts kube-apiserver and
// etcd in their own process groups, so nothing else would reach them.
func watchdog(pids []int, dir string) *exec.Cmd {
	if len(pids) == 0 {
		return nil
	}
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	script := `while kill -0 "$1" 2>/dev/null; do sleep 1; done; dir=$2; shift 2; kill -9 "$@" 2>/dev/null; sleep 1; rm -rf "$dir"`
	cmd := exec.Command("sh", append([]string{"-c", script, "kubetest-watchdog", strconv.Itoa(os.Getpid()), dir}, list...)...)
	if err := cmd.Start(); err != nil {
		return nil // best effort: Stop still stops them in the normal case
	}
	return cmd
}

// children returns the PIDs of this process's children that run a binary
// from dir (Linux /proc; empty elsewhere).
func children(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[1] != self {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && filepath.Dir(exe) == filepath.Clean(dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}
