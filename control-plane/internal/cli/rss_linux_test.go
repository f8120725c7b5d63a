package cli

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// helperArgs, when set in the environment, makes this test binary run
// `meshward` with those arguments (tab-separated) instead of the tests: a
// subprocess whose peak memory is its own.
const helperArgs = "MESHWARD_CLI_HELPER_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(helperArgs); args != "" {
		err := Main(strings.Split(args, "\t"), os.Stdout, os.Stderr)
		// The peak RSS of this process since its exec (the parent's
		// rusage would count the test binary it was forked from).
		status, _ := os.ReadFile("/proc/self/status")
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				fmt.Fprintln(os.Stderr, hwmPrefix+strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")))
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hwmPrefix starts the helper's line giving its peak RSS.
const hwmPrefix = "meshward-helper VmHWM: "

// hostileHAR writes a small gzip-compressed HAR archive that unpacks to
// about 250 MB: two entries whose request bodies are 120 MiB of one byte,
// between ordinary entries (which must still be learned).
func hostileHAR(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	gzw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	zw := &stickyWriter{w: gzw}
	entry := func(i int) string {
		return fmt.Sprintf(`{"startedDateTime":"2026-01-01T00:00:%02dZ","request":{"method":"GET","url":"http://reviews/reviews/%d?lang=en","headers":[]},"response":{"status":200},"serverIPAddress":"reviews"}`, i%60, i)
	}
	_, _ = io.WriteString(zw, `{"log":{"version":"1.2","entries":[`)
	normal := 0
	for i := 0; i < 300; i++ {
		if i > 0 {
			_, _ = io.WriteString(zw, ",")
		}
		if i == 100 || i == 200 {
			_, _ = io.WriteString(zw, `{"request":{"method":"POST","url":"http://reviews/upload","postData":{"text":"`)
			chunk := bytes.Repeat([]byte("A"), 1<<20)
			for j := 0; j < 120; j++ {
				_, _ = zw.Write(chunk)
			}
			_, _ = io.WriteString(zw, `"}},"serverIPAddress":"reviews"},`)
		}
		_, _ = io.WriteString(zw, entry(i))
		normal++
	}
	_, _ = io.WriteString(zw, `]}}`)
	if err := errors.Join(zw.err, gzw.Close()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return normal
}

// TestTrainHostileHARMemory: a 255 KB HAR.gz that unpacks to 250 MB of two
// entries keeps `meshward train` (a subprocess, measured by its peak RSS)
// under 200 MB; the oversized entries are reported and skipped, the
// ordinary ones learned.
func TestTrainHostileHARMemory(t *testing.T) {
	dir := t.TempDir()
	har := filepath.Join(dir, "hostile.har.gz")
	normal := hostileHAR(t, har)
	st, err := os.Stat(har)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 300<<10 {
		t.Fatalf("the hostile HAR.gz is %d bytes, want about 255 KB", st.Size())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperArgs+"="+strings.Join([]string{"train", "-out", filepath.Join(dir, "model.bin"), har}, "\t"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("train: %v\n%s%s", err, out.String(), errOut.String())
	}
	var rss int64
	for _, l := range strings.Split(errOut.String(), "\n") {
		if v, ok := strings.CutPrefix(l, hwmPrefix); ok {
			if _, err := fmt.Sscanf(v, "%d kB", &rss); err != nil {
				t.Fatalf("peak RSS %q: %v", v, err)
			}
			rss <<= 10
		}
	}
	if rss == 0 {
		t.Fatalf("the helper did not report its peak RSS: %s", errOut.String())
	}
	t.Logf("meshward train on a %d-byte HAR.gz: peak RSS %d MB; %s", st.Size(), rss>>20, strings.TrimSpace(out.String()))
	if rss > 200<<20 {
		t.Errorf("peak RSS %d MB, want under 200 MB", rss>>20)
	}
	var learned, held int
	if i := strings.Index(out.String(), "), "); i < 0 {
		t.Fatalf("train output: %s", out.String())
	} else if _, err := fmt.Sscanf(out.String()[i:], "), %d requests learned, %d held back", &learned, &held); err != nil || learned+held != normal {
		t.Errorf("learned %d + held back %d, want the %d ordinary entries (%v): %s", learned, held, normal, err, out.String())
	}
	if !strings.Contains(out.String(), "2 malformed lines skipped") || strings.Count(errOut.String(), "longer than") != 2 {
		t.Errorf("the two oversized entries were not reported and skipped: %s / %s", out.String(), errOut.String())
	}
}

// stickyWriter keeps the first error its writer returned, so a run of
// writes is checked once at the end.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(b)
	s.err = err
	return n, err
}
