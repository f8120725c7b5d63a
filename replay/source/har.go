package source

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meshward/meshward/models"
)

// harEntry is the part of a HAR 1.2 entry that a Record needs.
type harEntry struct {
	StartedDateTime string  `json:"startedDateTime"`
	Time            float64 `json:"time"`
	Request         *struct {
		Method   string  `json:"method"`
		URL      string  `json:"url"`
		Headers  []harNV `json:"headers"`
		BodySize *int64  `json:"bodySize"`
		PostData *struct {
			Text     string  `json:"text"`
			Params   []harNV `json:"params"`
			Encoding string  `json:"encoding"` // not HAR 1.2, but some tools write it
		} `json:"postData"`
	} `json:"request"`
	Response *struct {
		Status   int    `json:"status"`
		BodySize *int64 `json:"bodySize"`
		Content  *struct {
			Size *int64 `json:"size"`
		} `json:"content"`
	} `json:"response"`
	ServerIPAddress string `json:"serverIPAddress"`
}

type harNV struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ReadHAR reads the entries of a HAR 1.2 archive (log.entries), calling
// emit for each good one and bad for each malformed one, which is skipped.
// The archive is streamed: one entry is held at a time. Gzip-compressed
// input is decompressed transparently. It stops early when emit returns an
// error, the reader fails or the JSON is broken (after which nothing more
// can be read).
//
// startedDateTime becomes TS, time Duration, request.url's path and query
// Path and Query, postData.text (or its params, form-encoded) Body,
// response.status Status, response.content.size (or bodySize)
// ResponseBytes, request.bodySize RequestBytes, and serverIPAddress
// Destination. HTTP/2 pseudo-headers are dropped; ":authority" becomes a
// "host" header when there is none. Pos is "name:entry N", N counting
// entries from 1.
func ReadHAR(r io.Reader, name string, o Overrides, emit func(*Record) error, bad func(Problem)) error {
	return ReadHARWith(r, name, o, Limits{}, emit, bad)
}

// ReadHARWith is ReadHAR with other limits: an entry longer than
// lim.MaxEntryBytes (DefaultMaxEntryBytes when zero) is reported and
// skipped without being held in memory.
func ReadHARWith(r io.Reader, name string, o Overrides, lim Limits, emit func(*Record) error, bad func(Problem)) error {
	in, err := gunzipMaybe(r)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	max := lim.entryBytes(DefaultMaxEntryBytes)
	el := newElements(in, max)
	if err := el.enter("log", "entries"); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var buf []byte
	for n := 1; ; n++ {
		pos := name + ":entry " + strconv.Itoa(n)
		raw, tooBig, ok, err := el.next(buf[:0])
		if err != nil {
			return fmt.Errorf("%s: %w (byte %d; nothing after it can be read)", pos, err, el.off)
		}
		if !ok {
			break
		}
		buf = raw
		if tooBig {
			lim.hit()
			bad(Problem{Pos: pos, Err: fmt.Errorf("entry longer than %d bytes: skipped", max)})
			continue
		}
		rec, err := parseHAREntry(raw)
		if err != nil {
			bad(Problem{Pos: pos, Err: err})
			continue
		}
		rec.Pos = pos
		o.Apply(rec)
		if err := emit(rec); err != nil {
			return err
		}
	}
	// What follows the entries (pages, comments, …) is not needed.
	return nil
}

func parseHAREntry(raw json.RawMessage) (*Record, error) {
	var e harEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("not a HAR entry: %v", err)
	}
	if e.Request == nil {
		return nil, errors.New("request: required")
	}
	var errs []error
	q := e.Request
	if q.Method == "" {
		errs = append(errs, errors.New("request.method: required"))
	} else if strings.ContainsAny(q.Method, " \t\r\n") {
		errs = append(errs, fmt.Errorf("request.method: %q contains white space", q.Method))
	}
	target, err := harTarget(q.URL)
	if err != nil {
		errs = append(errs, fmt.Errorf("request.url: %v", err))
	}
	rec := &Record{}
	if e.StartedDateTime != "" {
		ts, err := time.Parse(time.RFC3339Nano, e.StartedDateTime)
		if err != nil {
			errs = append(errs, fmt.Errorf("startedDateTime: %q is not ISO 8601", e.StartedDateTime))
		}
		rec.TS = ts
	}
	if e.Response != nil && (e.Response.Status < 0 || e.Response.Status > 999) {
		errs = append(errs, fmt.Errorf("response.status: %d is not an HTTP status", e.Response.Status))
	}
	var body []byte
	if pd := q.PostData; pd != nil {
		switch {
		case pd.Text != "" && strings.EqualFold(pd.Encoding, "base64"):
			b, err := base64.StdEncoding.DecodeString(pd.Text)
			if err != nil {
				errs = append(errs, fmt.Errorf("request.postData.text: bad base64: %v", err))
			}
			body = b
		case pd.Text != "":
			body = []byte(pd.Text)
		case len(pd.Params) > 0:
			var sb strings.Builder
			for i, p := range pd.Params {
				if i > 0 {
					sb.WriteByte('&')
				}
				sb.WriteString(url.QueryEscape(p.Name))
				sb.WriteByte('=')
				sb.WriteString(url.QueryEscape(p.Value))
			}
			body = []byte(sb.String())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	req := &rec.Request
	req.Method = q.Method
	req.Path, req.Query = models.SplitTarget(target)
	req.Headers = harHeaders(q.Headers)
	req.RequestBytes = int64(len(body))
	if q.BodySize != nil && *q.BodySize > 0 {
		req.RequestBytes = *q.BodySize
	}
	if len(body) > models.MaxBody {
		body = body[:models.MaxBody]
	}
	if len(body) > 0 {
		req.Body = body
	}
	if rs := e.Response; rs != nil {
		req.Status = rs.Status
		switch {
		case rs.Content != nil && rs.Content.Size != nil && *rs.Content.Size >= 0:
			req.ResponseBytes = *rs.Content.Size
		case rs.BodySize != nil && *rs.BodySize >= 0:
			req.ResponseBytes = *rs.BodySize
		}
	}
	if e.Time > 0 {
		req.Duration = time.Duration(e.Time * float64(time.Millisecond))
	}
	req.Destination = strings.TrimSuffix(strings.TrimPrefix(e.ServerIPAddress, "["), "]")
	return rec, nil
}

// harTarget returns the path and query of an absolute URL (or of an
// origin-form target, which some tools write).
func harTarget(u string) (string, error) {
	switch {
	case u == "":
		return "", errors.New("required")
	case strings.HasPrefix(u, "/"):
		t := originForm(u)
		if i := strings.IndexByte(t, '#'); i >= 0 {
			t = t[:i]
		}
		return t, nil
	case strings.Contains(u, "://"):
		t := originForm(u)
		if !strings.HasPrefix(t, "/") {
			return "", fmt.Errorf("%q is not an absolute URL", clip([]byte(u)))
		}
		return t, nil
	}
	return "", fmt.Errorf("%q is not an absolute URL", clip([]byte(u)))
}

// harHeaders lower-cases names and drops HTTP/2 pseudo-headers, turning
// ":authority" into "host" when there is no host header.
func harHeaders(in []harNV) []models.Header {
	if len(in) == 0 {
		return nil
	}
	out := make([]models.Header, 0, len(in))
	authority := ""
	hasHost := false
	for _, h := range in {
		n := strings.ToLower(h.Name)
		if strings.HasPrefix(n, ":") {
			if n == ":authority" && authority == "" {
				authority = h.Value
			}
			continue
		}
		if n == "" {
			continue
		}
		hasHost = hasHost || n == "host"
		out = append(out, models.Header{Name: n, Value: h.Value})
	}
	if authority != "" && !hasHost {
		out = append([]models.Header{{Name: "host", Value: authority}}, out...)
	}
	return out
}
