package cli

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// loadIdentities reads an address → workload map: one "ADDRESS NAME" (or
// "ADDRESS,NAME") per line, '#' comments. Errors name the file and line.
func loadIdentities(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		fields := strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want ADDRESS NAME, got %q", path, n, line)
		}
		out[fields[0]] = fields[1]
	}
	return out, sc.Err()
}
