package source

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshward/meshward/models"
)

// MaxJSONLLine bounds one JSONL record by default (Limits.MaxEntryBytes
// sets another bound).
const MaxJSONLLine = 1 << 20

// jsonlRecord is the JSONL request record. Only method and path are
// required; see README "JSONL record format".
type jsonlRecord struct {
	TS            json.RawMessage `json:"ts"`
	Src           string          `json:"src"`
	Dst           string          `json:"dst"`
	Method        string          `json:"method"`
	Path          string          `json:"path"`
	Headers       json.RawMessage `json:"headers"`
	Body          string          `json:"body"`
	Status        int             `json:"status"`
	RequestBytes  int64           `json:"request_bytes"`
	ResponseBytes int64           `json:"response_bytes"`
	DurationMS    float64         `json:"duration_ms"`
	Label         string          `json:"label"`
	AttackType    string          `json:"attack_type"`
}

// ReadJSONL reads JSONL request records, calling emit for each good one and
// bad for each malformed line (which is skipped). A line longer than
// MaxJSONLLine is reported with its number and skipped too, without being
// held in memory. It stops early only when emit returns an error or the
// reader fails.
func ReadJSONL(r io.Reader, name string, o Overrides, emit func(*Record) error, bad func(Problem)) error {
	return ReadJSONLWith(r, name, o, Limits{}, emit, bad)
}

// ReadJSONLWith is ReadJSONL with other limits (a line longer than
// lim.MaxEntryBytes is skipped).
func ReadJSONLWith(r io.Reader, name string, o Overrides, lim Limits, emit func(*Record) error, bad func(Problem)) error {
	maxLine := lim.entryBytes(MaxJSONLLine)
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64*1024)
	}
	var buf []byte
	for line := 1; ; line++ {
		b, tooLong, err := readLine(br, buf[:0], maxLine)
		buf = b[:0]
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if len(b) == 0 && !tooLong && errors.Is(err, io.EOF) {
			return nil
		}
		pos := name + ":" + strconv.Itoa(line)
		switch b = bytes.TrimSpace(b); {
		case tooLong:
			lim.hit()
			bad(Problem{Pos: pos, Err: fmt.Errorf("line longer than %d bytes: skipped", maxLine)})
		case len(b) == 0 || b[0] == '#':
		default:
			rec, perr := parseJSONL(b)
			if perr != nil {
				bad(Problem{Pos: pos, Err: perr})
				break
			}
			rec.Pos = pos
			o.Apply(rec)
			if err := emit(rec); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// readLine appends one line (without its newline) to buf. A line longer
// than max is read to its end but not kept: tooLong is set and buf holds
// what fit. err is io.EOF at the end of the input.
func readLine(br *bufio.Reader, buf []byte, max int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > max+1 { // +1: the newline
				tooLong = true
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			return buf, tooLong, err
		}
		return bytes.TrimSuffix(buf, []byte("\n")), tooLong, nil
	}
}

func parseJSONL(b []byte) (*Record, error) {
	var j jsonlRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("not a JSON request record: %v", err)
	}
	var errs []error
	if j.Method == "" {
		errs = append(errs, errors.New("method: required"))
	} else if strings.ContainsAny(j.Method, " \t\r\n") {
		errs = append(errs, fmt.Errorf("method: %q contains white space", j.Method))
	}
	if j.Path == "" {
		errs = append(errs, errors.New("path: required"))
	}
	if j.Status < 0 || j.Status > 999 {
		errs = append(errs, fmt.Errorf("status: %d is not an HTTP status", j.Status))
	}
	if j.ResponseBytes < 0 || j.RequestBytes < 0 || j.DurationMS < 0 {
		errs = append(errs, errors.New("request_bytes, response_bytes and duration_ms must not be negative"))
	}
	rec := &Record{Label: j.Label, AttackType: j.AttackType}
	ts, err := parseTS(j.TS)
	if err != nil {
		errs = append(errs, fmt.Errorf("ts: %v", err))
	}
	rec.TS = ts
	hs, err := parseHeaders(j.Headers)
	if err != nil {
		errs = append(errs, fmt.Errorf("headers: %v", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	req := &rec.Request
	req.Method = j.Method
	target := j.Path
	if !strings.HasPrefix(target, "/") {
		// An absolute URI: keep the path and query.
		if i := strings.Index(target, "://"); i >= 0 {
			rest := target[i+3:]
			if k := strings.IndexAny(rest, "/?"); k >= 0 {
				target = rest[k:]
			} else {
				target = "/"
			}
		}
	}
	req.Path, req.Query = models.SplitTarget(target)
	req.Headers = hs
	if len(j.Body) > models.MaxBody {
		j.Body = j.Body[:models.MaxBody]
	}
	if j.Body != "" {
		req.Body = []byte(j.Body)
	}
	req.Source, req.Destination = j.Src, j.Dst
	req.Status = j.Status
	req.RequestBytes, req.ResponseBytes = j.RequestBytes, j.ResponseBytes
	req.Duration = time.Duration(j.DurationMS * float64(time.Millisecond))
	return rec, nil
}

// parseTS accepts an RFC 3339 string or Unix nanoseconds.
func parseTS(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return time.Time{}, err
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not RFC 3339", s)
		}
		return t, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s is neither an RFC 3339 string nor integer Unix nanoseconds", raw)
	}
	return time.Unix(0, n).UTC(), nil
}

// parseHeaders accepts {"name": "value", ...} (or name → [values]) and
// [["name","value"], ...]. Names are lower-cased.
func parseHeaders(raw json.RawMessage) ([]models.Header, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	switch raw[0] {
	case '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		sort.Strings(names) // JSON objects have no order; make ours stable
		var out []models.Header
		for _, k := range names {
			v := m[k]
			var s string
			if err := json.Unmarshal(v, &s); err == nil {
				out = append(out, models.Header{Name: strings.ToLower(k), Value: s})
				continue
			}
			var ss []string
			if err := json.Unmarshal(v, &ss); err != nil {
				return nil, fmt.Errorf("value of %q is neither a string nor a list of strings", k)
			}
			for _, s := range ss {
				out = append(out, models.Header{Name: strings.ToLower(k), Value: s})
			}
		}
		return out, nil
	case '[':
		var pairs [][]string
		if err := json.Unmarshal(raw, &pairs); err != nil {
			return nil, errors.New("a list must hold [name, value] pairs of strings")
		}
		out := make([]models.Header, 0, len(pairs))
		for i, p := range pairs {
			if len(p) != 2 {
				return nil, fmt.Errorf("pair %d has %d elements, want 2", i, len(p))
			}
			out = append(out, models.Header{Name: strings.ToLower(p[0]), Value: p[1]})
		}
		return out, nil
	}
	return nil, errors.New("must be an object or a list of [name, value] pairs")
}
