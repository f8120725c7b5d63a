// Package datasets turns public development datasets into labelled meshward
// requests with a fixed, deterministic train/dev/test split, for offline
// evaluation (make eval).
//
// The data lives outside the repository, in a directory the caller names
// (by convention ../shared/data, or $MESHWARD_DATA; see DefaultDir). Three
// datasets are supported, listed by Names:
//
//   - "http_params": http_params/payload_train.csv, single parameter values
//     labelled norm/anom, each sent as GET /form?value=<value>.
//   - "crs_regression": crs_regression/crs_requests.jsonl.gz, the OWASP Core
//     Rule Set regression tests flattened to one request per test stage.
//   - "gotestwaf": gotestwaf/testcases/**/*.yml, GoTestWAF payloads expanded
//     over their encoders and placeholders, plus the benign texts in
//     false-pos/texts.yml.
//
// The loaders only translate formats; nothing in them is tuned to the
// content of the data. Malformed entries are skipped and counted in a
// Report (see LoadWithReport).
//
// Splits are assigned by SplitOf from a key that groups what must not leak
// across splits: the payload value for http_params, file and test id for
// crs_regression, testcase file and payload index for gotestwaf.
package datasets

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/meshward/meshward/models"
)

// Split names one of the three disjoint parts of a dataset.
type Split string

// The splits, in the proportions 60/20/20.
const (
	// Train is for fitting models.
	Train Split = "train"
	// Dev is for choosing thresholds and settings.
	Dev Split = "dev"
	// Test is for the final, untouched measurement.
	Test Split = "test"
)

// Splits lists the splits in order.
func Splits() []Split { return []Split{Train, Dev, Test} }

// Example is one labelled request.
type Example struct {
	// ID is stable across runs and names the entry in the source data, e.g.
	// "http_params:1234" (CSV line) or
	// "gotestwaf:owasp/sql-injection.yml:3:URL:URLParam".
	ID string
	// Request is the request as meshward sees it. Source is "client" and
	// Destination the dataset name for every example.
	Request models.Request
	// Attack tells whether the request is labelled malicious.
	Attack bool
	// AttackType is the dataset's attack class ("" for normal requests).
	AttackType string
	// Split is the split the example belongs to.
	Split Split
}

// Dataset names.
const (
	// HTTPParams is the labelled HTTP parameter values dataset.
	HTTPParams = "http_params"
	// CRSRegression is the OWASP CRS regression test dataset.
	CRSRegression = "crs_regression"
	// GoTestWAF is the GoTestWAF payload dataset.
	GoTestWAF = "gotestwaf"
)

// Names lists the datasets: "http_params", "crs_regression", "gotestwaf".
func Names() []string { return []string{HTTPParams, CRSRegression, GoTestWAF} }

// EnvDataDir is the environment variable that names the data directory.
const EnvDataDir = "MESHWARD_DATA"

// DefaultDir returns the data directory: $MESHWARD_DATA if set, else
// ../shared/data relative to the working directory. fromEnv reports which.
func DefaultDir() (dir string, fromEnv bool) {
	if d := os.Getenv(EnvDataDir); d != "" {
		return d, true
	}
	return filepath.Join("..", "shared", "data"), false
}

// Problem is one skipped entry: where it was and why.
type Problem struct {
	// Where locates the entry, e.g. "payload_train.csv:17" or
	// "crs_requests.jsonl.gz:line 42" or a gotestwaf file and combination.
	Where string
	// Why says what was wrong with it.
	Why string
}

// String formats the problem as "where: why".
func (p Problem) String() string { return p.Where + ": " + p.Why }

// maxProblems bounds how many Problems a Report keeps.
const maxProblems = 10

// Report tells what a load skipped or altered.
type Report struct {
	// Skipped counts the entries (rows, stages or generated requests) that
	// were skipped as malformed or unsupported.
	Skipped int
	// Problems holds the first few skipped entries (at most 10), in input
	// order.
	Problems []Problem
	// SkippedBy counts skipped entries by reason, e.g.
	// "unknown encoder Foo" or "missing uri".
	SkippedBy map[string]int
	// Truncated counts examples whose body was cut to models.MaxBody.
	Truncated int
}

func (r *Report) skip(where, why string) {
	r.Skipped++
	if r.SkippedBy == nil {
		r.SkippedBy = make(map[string]int)
	}
	r.SkippedBy[why]++
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, Problem{Where: where, Why: why})
	}
}

// String summarises the report on one line, reasons sorted.
func (r Report) String() string {
	reasons := make([]string, 0, len(r.SkippedBy))
	for why, n := range r.SkippedBy {
		reasons = append(reasons, fmt.Sprintf("%s ×%d", why, n))
	}
	sort.Strings(reasons)
	return fmt.Sprintf("skipped %d (%s), truncated %d", r.Skipped, strings.Join(reasons, "; "), r.Truncated)
}

// Load reads one dataset from dir. Malformed entries are skipped; use
// LoadWithReport to learn how many and which.
func Load(dir, name string) ([]Example, error) {
	ex, _, err := LoadWithReport(dir, name)
	return ex, err
}

// LoadWithReport reads one dataset from dir, like Load, and also returns a
// Report of the entries it skipped (with the first few positions) and of the
// bodies it truncated. The examples come in input order. An error means the
// dataset could not be read at all (missing file, unknown name, I/O error).
func LoadWithReport(dir, name string) ([]Example, Report, error) {
	switch name {
	case HTTPParams:
		return loadHTTPParams(dir)
	case CRSRegression:
		return loadCRS(dir)
	case GoTestWAF:
		return loadGoTestWAF(dir)
	}
	return nil, Report{}, fmt.Errorf("datasets: unknown dataset %q (have %s)", name, strings.Join(Names(), ", "))
}

// SplitOf assigns a split from a stable key: sha256(dataset name + "\x00" +
// key), first 8 bytes as a big-endian uint64 mod 100: < 60 train, < 80 dev,
// else test.
func SplitOf(dataset, key string) Split {
	h := sha256.New()
	h.Write([]byte(dataset))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	switch v := binary.BigEndian.Uint64(h.Sum(sum[:0])[:8]) % 100; {
	case v < 60:
		return Train
	case v < 80:
		return Dev
	default:
		return Test
	}
}

// Fixed request details shared by the generated requests.
const (
	source      = "client"
	defaultHost = "app.example"
	// browserUA is an ordinary desktop browser user agent.
	browserUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	acceptAll = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
)

// baseHeaders returns the headers every generated (not replayed) request has.
func baseHeaders() []models.Header {
	return []models.Header{
		{Name: "host", Value: defaultHost},
		{Name: "user-agent", Value: browserUA},
		{Name: "accept", Value: acceptAll},
	}
}

// capBody returns b cut to models.MaxBody and whether it was cut.
func capBody(b []byte) ([]byte, bool) {
	if len(b) > models.MaxBody {
		return b[:models.MaxBody:models.MaxBody], true
	}
	return b, false
}
