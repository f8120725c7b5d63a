package datasets

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/meshward/meshward/models"
)

// crsFile is the flattened CRS regression tests, relative to the data
// directory.
const crsFile = "crs_regression/crs_requests.jsonl.gz"

// crsStage is one line of crs_requests.jsonl.gz (the fields we use).
type crsStage struct {
	File           string                     `json:"file"`
	Category       string                     `json:"category"`
	TestID         *int                       `json:"test_id"`
	Stage          *int                       `json:"stage"`
	Label          string                     `json:"label"`
	Method         *string                    `json:"method"`
	URI            *string                    `json:"uri"`
	Headers        map[string]json.RawMessage `json:"headers"`
	Data           *string                    `json:"data"`
	EncodedRequest *string                    `json:"encoded_request"`
}

// categoryPrefix matches the "REQUEST-942-" part of a CRS category.
var categoryPrefix = regexp.MustCompile(`^[A-Za-z]+-[0-9]+-`)

// crsAttackType shortens "REQUEST-942-APPLICATION-ATTACK-SQLI" to
// "application-attack-sqli".
func crsAttackType(category string) string {
	return strings.ToLower(categoryPrefix.ReplaceAllString(category, ""))
}

// loadCRS reads crs_regression/crs_requests.jsonl.gz, one JSON object per
// test stage. Attack is label == "rule_fires"; "rule_must_not_fire" is
// normal; any other label (stages that only check a status or a log line)
// is skipped and counted, since it says nothing about the request.
//
// A stage with encoded_request is parsed as a raw HTTP/1.x request; if
// net/http cannot read it (or its body), it is skipped and counted. Other
// stages are built from method, uri, headers and data; stages without a
// method or uri are skipped and counted. Headers are lower-cased and sorted
// by name (stable for equal names). go-ftw's header autocompletion
// (Content-Length and the like) is not emulated: the headers are the test's.
//
// IDs are "crs_regression:<file>:<test_id>:<stage>"; the split key is file
// and test_id, so all stages of a test share a split.
func loadCRS(dir string) ([]Example, Report, error) {
	var rep Report
	f, err := os.Open(filepath.Join(dir, crsFile))
	if err != nil {
		return nil, rep, fmt.Errorf("datasets: %s: %w", CRSRegression, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, rep, fmt.Errorf("datasets: %s: %w", CRSRegression, err)
	}
	defer zr.Close()

	br := bufio.NewReaderSize(zr, 1<<16)
	var out []Example
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return nil, rep, fmt.Errorf("datasets: %s: line %d: %w", CRSRegression, lineNo, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			ex, why := crsExample(line)
			if why != "" {
				rep.skip(fmt.Sprintf("%s:%d", crsFile, lineNo), why)
			} else {
				var cut bool
				if ex.Request.Body, cut = capBody(ex.Request.Body); cut {
					rep.Truncated++
				}
				out = append(out, ex)
			}
		}
		if err == io.EOF {
			break
		}
	}
	return out, rep, nil
}

// crsExample converts one JSON line; why is non-empty when it is skipped.
func crsExample(line []byte) (ex Example, why string) {
	var s crsStage
	if err := json.Unmarshal(line, &s); err != nil {
		return ex, "malformed JSON"
	}
	if s.File == "" || s.TestID == nil || s.Stage == nil {
		return ex, "missing file, test_id or stage"
	}
	switch s.Label {
	case "rule_fires":
		ex.Attack = true
		ex.AttackType = crsAttackType(s.Category)
	case "rule_must_not_fire":
	default:
		return ex, "label neither rule_fires nor rule_must_not_fire"
	}
	testID := strconv.Itoa(*s.TestID)
	ex.ID = fmt.Sprintf("%s:%s:%s:%d", CRSRegression, s.File, testID, *s.Stage)
	ex.Split = SplitOf(CRSRegression, s.File+"\x00"+testID)

	var req models.Request
	if s.EncodedRequest != nil && *s.EncodedRequest != "" {
		raw, err := base64.StdEncoding.DecodeString(*s.EncodedRequest)
		if err != nil {
			return ex, "encoded_request is not base64"
		}
		if req, why = parseRawRequest(raw); why != "" {
			return ex, why
		}
	} else {
		if s.Method == nil || *s.Method == "" {
			return ex, "missing method"
		}
		if s.URI == nil || *s.URI == "" {
			return ex, "missing uri"
		}
		req.Method = *s.Method
		req.Path, req.Query = models.SplitTarget(*s.URI)
		for name, v := range s.Headers {
			req.Headers = append(req.Headers, models.Header{Name: strings.ToLower(name), Value: jsonScalar(v)})
		}
		sortHeaders(req.Headers)
		if s.Data != nil && *s.Data != "" {
			req.Body = []byte(*s.Data)
		}
	}
	req.Source = source
	req.Destination = CRSRegression
	ex.Request = req
	return ex, ""
}

// jsonScalar renders a JSON header value: strings unquoted, anything else
// (numbers, booleans) as written.
func jsonScalar(v json.RawMessage) string {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s
	}
	return string(bytes.TrimSpace(v))
}

// sortHeaders sorts by name, keeping the order of equal names.
func sortHeaders(h []models.Header) {
	sort.SliceStable(h, func(i, j int) bool { return h[i].Name < h[j].Name })
}

// parseRawRequest reads a raw HTTP/1.x request. net/http validates it and
// decodes the body (Content-Length or chunked); the headers are read again
// with net/textproto so that the ones net/http moves out of the header map
// (Host, Content-Length, Transfer-Encoding) are kept as sent.
func parseRawRequest(raw []byte) (req models.Request, why string) {
	hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return req, "encoded_request not parseable by net/http"
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, models.MaxBody+1))
	hr.Body.Close()
	if err != nil {
		return req, "encoded_request body not readable"
	}

	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	if _, err := tp.ReadLine(); err != nil { // request line, already checked
		return req, "encoded_request not parseable by net/http"
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return req, "encoded_request headers not parseable"
	}
	names := make([]string, 0, len(mh))
	for name := range mh {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range mh[name] {
			req.Headers = append(req.Headers, models.Header{Name: strings.ToLower(name), Value: v})
		}
	}

	req.Method = hr.Method
	req.Path, req.Query = models.SplitTarget(hr.RequestURI)
	if len(body) > 0 {
		req.Body = body
	}
	return req, ""
}
