package kubetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestWatchdogKillsOrphans: a test process that dies without stopping its
// server (here: exits at once) leaves no kube-apiserver or etcd behind.
func TestWatchdogKillsOrphans(t *testing.T) {
	skipShort(t) // the child starts a kube-apiserver
	if os.Getenv("KUBETEST_ORPHAN_CHILD") == "1" {
		e, err := New()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("pids:", strings.Trim(fmt.Sprint(children(AssetsDir())), "[]"), "watchdog:", e.watchdog != nil)
		os.Exit(0) // no Stop: the watchdog must clean up
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchdogKillsOrphans$")
	cmd.Env = append(os.Environ(), "KUBETEST_ORPHAN_CHILD=1")
	out, err := cmd.Output()
	var pids []int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "pids: "); ok {
			f := strings.Fields(rest)
			if len(f) < 2 || f[len(f)-1] != "true" {
				t.Fatalf("child: %s", sc.Text())
			}
			for _, p := range f[:len(f)-2] {
				n, _ := strconv.Atoi(p)
				pids = append(pids, n)
			}
		}
	}
	if len(pids) != 2 {
		t.Fatalf("child did not report kube-apiserver and etcd (err %v):\n%s", err, out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				for _, p := range pids {
					_ = exec.Command("kill", "-9", strconv.Itoa(p)).Run()
				}
				t.Fatalf("process %d outlived its test process by 15 s", pid)
			}
			time.Sleep(100 * time.Millisecond) // poll interval
		}
	}
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	return len(f) > 0 && f[0] != "Z"
}
