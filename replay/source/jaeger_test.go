package source

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshward/meshward/internal/devdata"
)

const jaegerCSV = `TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration
t1,e,f,ts-route-service-b6c59fb57-zv8dt,GET /api/v1/routes?x=1,3000,3500,0
t1,a,root,ts-gateway-service-6f6cfc45b-h5m2n,/*,1000,9000,8
t1,b,a,ts-gateway-service-6f6cfc45b-h5m2n,HTTP POST,1100,8000,6
t1,c,b,ts-order-service-5b67c48447-mv5hb,/api/v1/orders/{id},1200,7200,6
t1,x,b,ts-order-service-5b67c48447-mv5hb,/api/v1/x,yesterday,7200,6
t1,c,b,ts-order-service-5b67c48447-mv5hb,/api/v1/orders/{id},1200,7200,6
t1,d,zz,ts-order-service-5b67c48447-mv5hb,/api/v1/lost,1300,1400,0
t1,short,a
t1,g,c,mysql-0,SELECT ts.orders,2500,2600,0
t1,h,c,ts-order-service-5b67c48447-mv5hb,OrderRepository.find,2400,2500,0
t2,f,root,ts-station-service-7f4f5f6f77-5qb6j,/api/v1/stations,2000,4000,2
t1,f,root,ts-station-service-7f4f5f6f77-5qb6j,/api/v1/stations,2000,4000,2
`

type jaegerRun struct {
	recs []*Record
	bad  []Problem
	st   JaegerStats
	err  error
}

func runJaeger(read func([]byte, string, Overrides, func(*Record) error, func(Problem)) (JaegerStats, error), in []byte, o Overrides) jaegerRun {
	var j jaegerRun
	j.st, j.err = read(in, "t.csv", o, func(r *Record) error { j.recs = append(j.recs, r); return nil }, func(p Problem) { j.bad = append(j.bad, p) })
	return j
}

func csvReader(in []byte, name string, o Overrides, emit func(*Record) error, bad func(Problem)) (JaegerStats, error) {
	return ReadJaegerCSV(bytes.NewReader(in), name, o, emit, bad)
}

func jsonReader(in []byte, name string, o Overrides, emit func(*Record) error, bad func(Problem)) (JaegerStats, error) {
	return ReadJaegerJSON(bytes.NewReader(in), name, o, emit, bad)
}

func gz(b []byte) []byte {
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	// Writes to a bytes.Buffer cannot fail.
	_, _ = zw.Write(b)
	_ = zw.Close()
	return zb.Bytes()
}

func TestReadJaegerCSV(t *testing.T) {
	for name, in := range map[string][]byte{"plain": []byte(jaegerCSV), "gzip": gz([]byte(jaegerCSV))} {
		t.Run(name, func(t *testing.T) {
			j := runJaeger(csvReader, in, Overrides{Label: "normal"})
			if j.err != nil {
				t.Fatal(j.err)
			}
			want := JaegerStats{Spans: 9, Roots: 3, Edges: 3, SameService: 2, ParentsMissing: 1, Duplicates: 1, Bad: 2}
			if j.st != want {
				t.Errorf("stats %+v, want %+v", j.st, want)
			}
			type edge struct{ pos, src, dst, method, path, query string }
			wants := []edge{
				{"t.csv:trace t1 span c", "ts-gateway-service", "ts-order-service", "POST", "/api/v1/orders/{id}", ""},
				{"t.csv:trace t1 span g", "ts-order-service", "mysql", "GET", "/SELECT_ts.orders", ""},
				{"t.csv:trace t1 span e", "ts-station-service", "ts-route-service", "GET", "/api/v1/routes", "x=1"},
			}
			if len(j.recs) != len(wants) {
				t.Fatalf("%d records, want %d", len(j.recs), len(wants))
			}
			for i, w := range wants {
				r := j.recs[i]
				q := r.Request
				got := edge{r.Pos, q.Source, q.Destination, q.Method, q.Path, q.Query}
				if got != w {
					t.Errorf("record %d: %+v, want %+v", i, got, w)
				}
				if r.Label != "normal" {
					t.Errorf("record %d: label %q", i, r.Label)
				}
			}
			if r := j.recs[0]; !r.TS.Equal(time.Unix(0, 1200)) || r.Request.Duration != 6000 {
				t.Errorf("ts %v duration %v", r.TS, r.Request.Duration)
			}
			if len(j.bad) != 2 || j.bad[0].Pos != "t.csv:line 6" || !strings.Contains(j.bad[0].Err.Error(), "StartTimeUnixNano") || j.bad[1].Pos != "t.csv:line 9" {
				t.Errorf("problems %v", j.bad)
			}
		})
	}
}

func TestReadJaegerCSVHeader(t *testing.T) {
	// Columns in another order, ServiceName instead of PodName, Duration in µs.
	in := "ServiceName,OperationName,SpanID,TraceID,ParentID,StartTimeUnixNano,Duration\nfront,GET /,1,t,,10,5\nback,DELETE /items/7,2,t,1,20,1.5\n"
	j := runJaeger(csvReader, []byte(in), Overrides{})
	if j.err != nil || len(j.recs) != 1 {
		t.Fatalf("%v %v", j.err, j.recs)
	}
	if q := j.recs[0].Request; q.Source != "front" || q.Destination != "back" || q.Method != "DELETE" || q.Path != "/items/7" || q.Duration != 1500 {
		t.Errorf("%+v", q)
	}
	for _, bad := range []string{"", "a,b,c\n1,2,3\n"} {
		if j := runJaeger(csvReader, []byte(bad), Overrides{}); j.err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

const jaegerJSON = `{"data":[
 {"traceID":"tr1","spans":[
  {"traceID":"tr1","spanID":"s3","operationName":"orders.Get","references":[{"refType":"CHILD_OF","traceID":"tr1","spanID":"s2"}],
   "startTime":1700000000000200,"duration":150,"processID":"p2",
   "tags":[{"key":"http.method","type":"string","value":"post"},{"key":"http.url","type":"string","value":"http://orders:8080/api/orders?id=1"},{"key":"http.status_code","type":"int64","value":500}]},
  {"traceID":"tr1","spanID":"s1","operationName":"GET /","references":[],"startTime":1700000000000000,"duration":1000,"processID":"p1","tags":[]},
  {"traceID":"tr1","spanID":"s2","operationName":"HTTP GET","references":[{"refType":"CHILD_OF","traceID":"tr1","spanID":"s1"}],"startTime":1700000000000100,"duration":500,"processID":"p1"},
  {"traceID":"tr1","spanID":"s4","operationName":"GET /api/stock","references":[{"refType":"FOLLOWS_FROM","traceID":"tr1","spanID":"s2"}],"startTime":1700000000000300,"duration":10,"processID":"p3",
   "tags":[{"key":"http.status_code","type":"string","value":"404"}]},
  {"traceID":"tr1","spanID":"s5","operationName":"lost","references":[{"refType":"CHILD_OF","traceID":"tr1","spanID":"nope"}],"startTime":1700000000000400,"duration":10,"processID":"p3"},
  {"traceID":"tr1","spanID":"s6","operationName":"cache get","references":[{"refType":"CHILD_OF","traceID":"tr1","spanID":"s3"}],"startTime":1700000000000250,"duration":10,"processID":"p2"}
 ],"processes":{"p1":{"serviceName":"frontend","tags":[]},"p2":{"serviceName":"orders"},"p3":{"serviceName":"stock"}}},
 {"traceID":"tr2","spans":"not a list"},
 {"traceID":"tr3","spans":[{"traceID":"tr3","operationName":"x","startTime":1,"duration":1,"processID":"p1"},
  {"traceID":"tr3","spanID":"q","operationName":"x","startTime":1,"duration":1,"processID":"p9"}],"processes":{"p1":{"serviceName":"a"}}}
],"total":0,"limit":0,"offset":0,"errors":null}`

func TestReadJaegerJSON(t *testing.T) {
	for name, in := range map[string][]byte{"plain": []byte(jaegerJSON), "gzip": gz([]byte(jaegerJSON))} {
		t.Run(name, func(t *testing.T) {
			j := runJaeger(jsonReader, in, Overrides{})
			if j.err != nil {
				t.Fatal(j.err)
			}
			want := JaegerStats{Spans: 6, Roots: 1, Edges: 2, SameService: 2, ParentsMissing: 1, Bad: 3}
			if j.st != want {
				t.Errorf("stats %+v, want %+v", j.st, want)
			}
			if len(j.recs) != 2 {
				t.Fatalf("records %v", j.recs)
			}
			r := j.recs[0]
			q := r.Request
			if r.Pos != "t.csv:trace tr1 span s3" || q.Source != "frontend" || q.Destination != "orders" || q.Method != "POST" || q.Path != "/api/orders" || q.Query != "id=1" || q.Status != 500 || q.Duration != 150*time.Microsecond || r.TS.UnixMicro() != 1700000000000200 {
				t.Errorf("first record %+v", r)
			}
			q = j.recs[1].Request
			if q.Source != "frontend" || q.Destination != "stock" || q.Method != "GET" || q.Path != "/api/stock" || q.Status != 404 {
				t.Errorf("second record %+v (FOLLOWS_FROM parent)", q)
			}
			var pos []string
			for _, p := range j.bad {
				pos = append(pos, p.Pos)
			}
			if strings.Join(pos, " | ") != "t.csv:trace 2 | t.csv:trace tr3 span ? | t.csv:trace tr3 span q" {
				t.Errorf("problems %v", j.bad)
			}
		})
	}
	if j := runJaeger(jsonReader, []byte(`{"data":[{"traceID":"a","spans":[]},{"traceID":`), Overrides{}); j.err == nil || !strings.Contains(j.err.Error(), "trace 2") {
		t.Errorf("truncated JSON: %v", j.err)
	}
}

// TestReadJaegerJSONTraceLimit: a trace over the limit is reported and
// skipped; the traces after it are read.
func TestReadJaegerJSONTraceLimit(t *testing.T) {
	big := `{"traceID":"big","spans":[],"warnings":["` + strings.Repeat("w", 8192) + `"]}`
	in := strings.Replace(jaegerJSON, `"data":[`, `"data":[`+big+`,`, 1)
	if in == jaegerJSON {
		t.Fatal("fixture changed: no data array")
	}
	var hits atomic.Int64
	var bad []Problem
	st, err := ReadJaegerJSONWith(strings.NewReader(in), "t.json", Overrides{}, Limits{MaxEntryBytes: 4096, Hits: &hits},
		func(*Record) error { return nil }, func(p Problem) { bad = append(bad, p) })
	if err != nil || st.Edges != 2 || hits.Load() != 1 || len(bad) == 0 || bad[0].Pos != "t.json:trace 1" || !strings.Contains(bad[0].Error(), "longer than 4096") {
		t.Errorf("stats %+v, err %v, hits %d, problems %v", st, err, hits.Load(), bad)
	}
}

func TestJaegerEmitError(t *testing.T) {
	stop := errors.New("stop")
	_, err := ReadJaegerCSV(strings.NewReader(jaegerCSV), "t", Overrides{}, func(*Record) error { return stop }, func(Problem) {})
	if !errors.Is(err, stop) {
		t.Errorf("err %v", err)
	}
}

func TestPodService(t *testing.T) {
	for pod, want := range map[string]string{
		"ts-order-service-6d9b8c7f5-x2x9k":    "ts-order-service",
		"ts-order-service-5b67c48447-mv5hb":   "ts-order-service",
		"ts-ui-dashboard-7b8f9c6d4-abcde":     "ts-ui-dashboard", // hand-written suffix after a hash
		"ts-travel2-service-5c66d57d58-6mp2b": "ts-travel2-service",
		"reviews-v2-5b64f47978-cbkkr":         "reviews-v2",
		"legacy-app-3291523541-b7xnq":         "legacy-app", // numeric template hash (Kubernetes < 1.11)
		"fluentd-x2x9k":                       "fluentd",    // DaemonSet, Job
		"mysql-0":                             "mysql",      // StatefulSet
		"redis-master-12":                     "redis-master",
		"report-28211400-x2x9k":               "report", // CronJob
		"ts-order-service":                    "ts-order-service",
		"order-store":                         "order-store", // vowels: not a suffix
		"frontend":                            "frontend",
		"":                                    "",
		"-x2x9k":                              "-x2x9k",
		"api-2024":                            "api-2024",
		" ts-seat-service-5c95b49cff-tdsdz ":  "ts-seat-service", //nolint:gocritic // surrounding spaces are the case under test
		"payments-api-7f9c8d6b5d-zz9tw-extra": "payments-api-7f9c8d6b5d-zz9tw-extra",
		"ts-verification-code-service-7b6dc75c45-2z9p2": "ts-verification-code-service",
	} {
		if got := PodService(pod); got != want {
			t.Errorf("PodService(%q) = %q, want %q", pod, got, want)
		}
	}
}

// dataDir returns the shared data directory (see internal/devdata).
func dataDir(t *testing.T) string { return devdata.Dir(t, "") }

// TestTrainTicketTraces reads every trace file of the TrainTicket data and
// checks that the service graph has a sane size (the README: 28 services,
// about 55 edges).
func TestTrainTicketTraces(t *testing.T) {
	dir := filepath.Join(dataDir(t), "trainticket_traces")
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".csv") || strings.HasSuffix(path, ".csv.gz")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	if len(files) == 0 {
		t.Fatalf("no trace files in %s", dir)
	}
	services := map[string]bool{}
	edges := map[[2]string]int{}
	var tot JaegerStats
	nbad := 0
	for _, path := range files {
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if h := Format(path, nil); h != FormatJaegerCSV {
			t.Errorf("Format(%s) = %q", path, h)
		}
		st, err := ReadJaegerCSV(f, filepath.Base(path), Overrides{}, func(r *Record) error {
			services[r.Request.Source], services[r.Request.Destination] = true, true
			edges[[2]string{r.Request.Source, r.Request.Destination}]++
			if r.Request.Method == "" || !strings.HasPrefix(r.Request.Path, "/") || r.TS.IsZero() {
				t.Errorf("%s: bad record %+v", r.Pos, r)
			}
			return nil
		}, func(p Problem) {
			if nbad++; nbad <= 5 {
				t.Logf("problem: %v", p)
			}
		})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		tot.Spans += st.Spans
		tot.Roots += st.Roots
		tot.Edges += st.Edges
		tot.SameService += st.SameService
		tot.ParentsMissing += st.ParentsMissing
		tot.Duplicates += st.Duplicates
		tot.Bad += st.Bad
	}
	var names []string
	for s := range services {
		names = append(names, s)
	}
	sort.Strings(names)
	var es []string
	for e, n := range edges {
		es = append(es, fmt.Sprintf("%s -> %s (%d)", e[0], e[1], n))
	}
	sort.Strings(es)
	t.Logf("%d files: %+v", len(files), tot)
	t.Logf("%d distinct services: %s", len(services), strings.Join(names, ", "))
	t.Logf("%d distinct edges:\n\t%s", len(edges), strings.Join(es, "\n\t"))
	if n := len(services); n < 20 || n > 40 {
		t.Errorf("%d services, want 20 to 40", n)
	}
	if n := len(edges); n < 30 || n > 90 {
		t.Errorf("%d edges, want 30 to 90", n)
	}
	if tot.Bad > tot.Spans/100 {
		t.Errorf("%d malformed of %d spans", tot.Bad, tot.Spans)
	}
}
