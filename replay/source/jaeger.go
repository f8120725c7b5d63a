package source

import (
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshward/meshward/models"
)

// MaxJaegerSpans bounds the spans of one file: all of them are held in
// memory, because a parent may come after its children.
const MaxJaegerSpans = 5_000_000

// JaegerStats counts what a Jaeger file held.
type JaegerStats struct {
	// Spans is the number of well-formed spans read.
	Spans int
	// Roots are spans without a parent.
	Roots int
	// Edges are spans whose parent belongs to another service: the
	// caller→callee requests emitted as records.
	Edges int
	// SameService are spans whose parent is in the same service (not
	// requests between services; not emitted).
	SameService int
	// ParentsMissing are spans whose parent is not in the file (a trace cut
	// by the file's time window, say); not emitted, not errors.
	ParentsMissing int
	// Duplicates are repeated copies of a span (the same trace and span
	// ID, the same content), dropped silently. A repeated span ID with
	// other content is reported as malformed.
	Duplicates int
	// Bad is the number of malformed rows or spans reported.
	Bad int
}

// span is the part of a Jaeger span that a Record needs.
type span struct {
	trace, id, parent string
	parentTrace       string // when the parent is in another trace
	service, op       string
	start, dur        int64 // Unix ns, ns
	method, target    string
	status            int
}

type spanKey struct{ trace, id string }

// ReadJaegerCSV reads Jaeger spans from CSV with a header row naming the
// columns TraceID, SpanID, ParentID, PodName (or ServiceName),
// OperationName, StartTimeUnixNano and EndTimeUnixNano or Duration (µs), in
// any order (the TrainTicket trace format). A service is its pod name less
// the Kubernetes hash suffixes (see PodService). ParentID "root" or empty
// marks a root span. Gzip-compressed input is decompressed transparently.
//
// Every span whose parent belongs to another service becomes a record:
// Source the parent's service, Destination the span's, Method and Path from
// the operation name (see ReadJaegerJSON), TS and Duration from the span,
// Pos "name:trace T span S". All spans of the file are read first (at most
// MaxJaegerSpans), then records are emitted in start-time order. A
// malformed row is reported with its line ("name:line N") and skipped.
func ReadJaegerCSV(r io.Reader, name string, o Overrides, emit func(*Record) error, bad func(Problem)) (JaegerStats, error) {
	var st JaegerStats
	in, err := gunzipMaybe(r)
	if err != nil {
		return st, fmt.Errorf("%s: %w", name, err)
	}
	cr := csv.NewReader(in)
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return st, fmt.Errorf("%s: empty, no header row", name)
		}
		return st, fmt.Errorf("%s:1: header row: %w", name, err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	idx := func(names ...string) int {
		for _, n := range names {
			if i, ok := col[strings.ToLower(n)]; ok {
				return i
			}
		}
		return -1
	}
	cTrace, cSpan, cParent := idx("TraceID"), idx("SpanID"), idx("ParentID", "ParentSpanID")
	cPod, cService := idx("PodName"), idx("ServiceName")
	cOp, cStart := idx("OperationName"), idx("StartTimeUnixNano")
	cEnd, cDur := idx("EndTimeUnixNano"), idx("Duration")
	if cTrace < 0 || cSpan < 0 || cParent < 0 || cPod < 0 && cService < 0 || cOp < 0 || cStart < 0 || cEnd < 0 && cDur < 0 {
		return st, fmt.Errorf("%s:1: header %q lacks TraceID, SpanID, ParentID, PodName, OperationName, StartTimeUnixNano or EndTimeUnixNano/Duration", name, strings.Join(head, ","))
	}
	need := max(cTrace, cSpan, cParent, cPod, cService, cOp, cStart, cEnd, cDur)
	intern := map[string]string{}
	in1 := func(s string) string {
		if v, ok := intern[s]; ok {
			return v
		}
		s = strings.Clone(s)
		intern[s] = s
		return s
	}
	podSvc := map[string]string{}
	var spans []span
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			st.Bad++
			bad(Problem{Pos: name + ":line " + strconv.Itoa(pe.StartLine), Err: pe.Err})
			continue
		}
		if err != nil {
			return st, fmt.Errorf("%s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		sp, err := csvSpan(rec, need, cTrace, cSpan, cParent, cOp, cStart, cEnd, cDur)
		if err == nil {
			switch {
			case cPod >= 0 && rec[cPod] != "":
				pod := rec[cPod]
				svc, ok := podSvc[pod]
				if !ok {
					pod = strings.Clone(pod)
					svc = in1(PodService(pod))
					podSvc[pod] = svc
				}
				sp.service = svc
			case cService >= 0 && rec[cService] != "":
				sp.service = in1(rec[cService])
			default:
				err = errors.New("no pod or service name")
			}
		}
		if err != nil {
			st.Bad++
			bad(Problem{Pos: name + ":line " + strconv.Itoa(line), Err: err})
			continue
		}
		sp.trace, sp.id, sp.parent, sp.op = strings.Clone(sp.trace), strings.Clone(sp.id), strings.Clone(sp.parent), in1(sp.op)
		if len(spans) >= MaxJaegerSpans {
			return st, fmt.Errorf("%s:line %d: more than %d spans in one file", name, line, MaxJaegerSpans)
		}
		spans = append(spans, sp)
	}
	return emitSpans(spans, name, o, emit, bad, st)
}

// csvSpan parses the columns of one row other than the service.
func csvSpan(rec []string, need, cTrace, cSpan, cParent, cOp, cStart, cEnd, cDur int) (span, error) {
	var sp span
	if len(rec) <= need {
		return sp, fmt.Errorf("%d fields, want at least %d", len(rec), need+1)
	}
	sp.trace, sp.id, sp.op = rec[cTrace], rec[cSpan], rec[cOp]
	if sp.trace == "" || sp.id == "" {
		return sp, errors.New("TraceID and SpanID are required")
	}
	if p := rec[cParent]; !isRootParent(p) {
		sp.parent = p
	}
	var err error
	if sp.start, err = strconv.ParseInt(rec[cStart], 10, 64); err != nil || sp.start < 0 {
		return sp, fmt.Errorf("StartTimeUnixNano %q is not Unix nanoseconds", rec[cStart])
	}
	if cEnd >= 0 && rec[cEnd] != "" {
		end, err := strconv.ParseInt(rec[cEnd], 10, 64)
		if err != nil || end < sp.start {
			return sp, fmt.Errorf("EndTimeUnixNano %q is not Unix nanoseconds after the start", rec[cEnd])
		}
		sp.dur = end - sp.start
	} else if cDur >= 0 {
		us, err := strconv.ParseFloat(rec[cDur], 64)
		if err != nil || us < 0 {
			return sp, fmt.Errorf("column Duration: %q is not a number of microseconds", rec[cDur])
		}
		sp.dur = int64(us * 1e3)
	}
	return sp, nil
}

func isRootParent(p string) bool {
	return p == "" || strings.EqualFold(p, "root") || strings.Trim(p, "0") == ""
}

// Jaeger query API JSON.
type (
	jaegerTrace struct {
		TraceID   string                   `json:"traceID"`
		Spans     []jaegerSpan             `json:"spans"`
		Processes map[string]jaegerProcess `json:"processes"`
	}
	jaegerSpan struct {
		TraceID       string `json:"traceID"`
		SpanID        string `json:"spanID"`
		ParentSpanID  string `json:"parentSpanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		StartTime int64          `json:"startTime"` // µs
		Duration  int64          `json:"duration"`  // µs
		ProcessID string         `json:"processID"`
		Process   *jaegerProcess `json:"process"`
		Tags      []jaegerTag    `json:"tags"`
	}
	jaegerProcess struct {
		ServiceName string `json:"serviceName"`
	}
	jaegerTag struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
)

// ReadJaegerJSON reads the JSON answer of Jaeger's query API
// ({"data":[trace, …]}, also what the Jaeger UI downloads), trace by trace;
// the service of a span is its process's serviceName. Records are as for
// ReadJaegerCSV, with the request taken from tags where present:
// http.method (or http.request.method), http.target, http.url (or
// url.full, url.path, http.route) and http.status_code (or
// http.response.status_code). Otherwise an operation name like
// "GET /api/v1/orders" gives method and path, a name starting with "/" the
// path, and any other name the path "/" + name with white space as '_';
// the method then comes from the parent's operation name ("HTTP POST") or
// is "GET". A malformed trace or span is reported ("name:trace N" for the
// Nth trace, "name:trace T span S") and skipped.
func ReadJaegerJSON(r io.Reader, name string, o Overrides, emit func(*Record) error, bad func(Problem)) (JaegerStats, error) {
	return ReadJaegerJSONWith(r, name, o, Limits{}, emit, bad)
}

// ReadJaegerJSONWith is ReadJaegerJSON with other limits: a trace longer
// than lim.MaxEntryBytes (DefaultMaxEntryBytes when zero) is reported and
// skipped without being held in memory.
func ReadJaegerJSONWith(r io.Reader, name string, o Overrides, lim Limits, emit func(*Record) error, bad func(Problem)) (JaegerStats, error) {
	var st JaegerStats
	in, err := gunzipMaybe(r)
	if err != nil {
		return st, fmt.Errorf("%s: %w", name, err)
	}
	max := lim.entryBytes(DefaultMaxEntryBytes)
	el := newElements(in, max)
	if err := el.enter("data"); err != nil {
		return st, fmt.Errorf("%s: %w", name, err)
	}
	var spans []span
	var buf []byte
	for n := 1; ; n++ {
		raw, tooBig, ok, err := el.next(buf[:0])
		if err != nil {
			return st, fmt.Errorf("%s:trace %d: %w (byte %d; nothing after it can be read)", name, n, err, el.off)
		}
		if !ok {
			break
		}
		buf = raw
		pos := name + ":trace " + strconv.Itoa(n)
		if tooBig {
			st.Bad++
			lim.hit()
			bad(Problem{Pos: pos, Err: fmt.Errorf("trace longer than %d bytes: skipped", max)})
			continue
		}
		var t jaegerTrace
		if err := json.Unmarshal(raw, &t); err != nil {
			st.Bad++
			bad(Problem{Pos: pos, Err: fmt.Errorf("not a Jaeger trace: %v", err)})
			continue
		}
		for _, js := range t.Spans {
			sp, err := jsonSpan(&t, &js)
			if err != nil {
				st.Bad++
				bad(Problem{Pos: fmt.Sprintf("%s:trace %s span %s", name, cmp.Or(js.TraceID, t.TraceID, strconv.Itoa(n)), cmp.Or(js.SpanID, "?")), Err: err})
				continue
			}
			if len(spans) >= MaxJaegerSpans {
				return st, fmt.Errorf("%s:trace %d: more than %d spans in one file", name, n, MaxJaegerSpans)
			}
			spans = append(spans, sp)
		}
	}
	return emitSpans(spans, name, o, emit, bad, st)
}

func jsonSpan(t *jaegerTrace, js *jaegerSpan) (span, error) {
	sp := span{trace: cmp.Or(js.TraceID, t.TraceID), id: js.SpanID, op: js.OperationName}
	if sp.trace == "" || sp.id == "" {
		return sp, errors.New("traceID and spanID are required")
	}
	if js.StartTime < 0 || js.Duration < 0 {
		return sp, errors.New("negative startTime or duration")
	}
	sp.start, sp.dur = js.StartTime*1e3, js.Duration*1e3
	if !isRootParent(js.ParentSpanID) {
		sp.parent = js.ParentSpanID
	}
	for _, ref := range js.References {
		if ref.SpanID != "" && (ref.RefType == "CHILD_OF" || sp.parent == "") {
			sp.parent = ref.SpanID
			sp.parentTrace = ""
			if ref.TraceID != sp.trace {
				sp.parentTrace = ref.TraceID
			}
			if ref.RefType == "CHILD_OF" {
				break
			}
		}
	}
	switch {
	case js.Process != nil && js.Process.ServiceName != "":
		sp.service = js.Process.ServiceName
	case t.Processes[js.ProcessID].ServiceName != "":
		sp.service = t.Processes[js.ProcessID].ServiceName
	default:
		return sp, fmt.Errorf("process %q has no serviceName", js.ProcessID)
	}
	var url, route string
	for _, tag := range js.Tags {
		switch tag.Key {
		case "http.method", "http.request.method":
			sp.method = tagString(tag.Value)
		case "http.target", "url.path":
			if sp.target == "" {
				sp.target = tagString(tag.Value)
			}
		case "http.url", "url.full":
			url = tagString(tag.Value)
		case "http.route":
			route = tagString(tag.Value)
		case "http.status_code", "http.response.status_code":
			if n, err := strconv.Atoi(tagString(tag.Value)); err == nil && n >= 0 && n <= 999 {
				sp.status = n
			}
		}
	}
	if sp.target == "" {
		if t := originForm(url); strings.HasPrefix(t, "/") {
			sp.target = t
		} else if strings.HasPrefix(route, "/") {
			sp.target = route
		}
	}
	return sp, nil
}

// tagString returns a tag value as text: a JSON string unquoted, anything
// else as written.
func tagString(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return strings.TrimSpace(string(v))
}

// emitSpans emits the spans whose parent is in another service, in start
// order, and completes the counts.
func emitSpans(spans []span, name string, o Overrides, emit func(*Record) error, bad func(Problem), st JaegerStats) (JaegerStats, error) {
	byKey := make(map[spanKey]int32, len(spans))
	for i := range spans {
		k := spanKey{spans[i].trace, spans[i].id}
		if j, dup := byKey[k]; dup {
			if spans[j] == spans[i] {
				st.Duplicates++
				continue
			}
			st.Bad++
			bad(Problem{Pos: fmt.Sprintf("%s:trace %s span %s", name, k.trace, k.id), Err: errors.New("span ID appears twice with different content; the first is kept")})
			continue
		}
		byKey[k] = int32(i)
	}
	type edge struct{ child, parent int32 }
	var edges []edge
	for i := range spans {
		sp := &spans[i]
		if j, ok := byKey[spanKey{sp.trace, sp.id}]; !ok || j != int32(i) {
			continue // a duplicate
		}
		st.Spans++
		if sp.parent == "" {
			st.Roots++
			continue
		}
		j, ok := byKey[spanKey{cmp.Or(sp.parentTrace, sp.trace), sp.parent}]
		switch {
		case !ok:
			st.ParentsMissing++
		case spans[j].service == sp.service:
			st.SameService++
		default:
			edges = append(edges, edge{int32(i), j})
		}
	}
	slices.SortStableFunc(edges, func(a, b edge) int { return cmp.Compare(spans[a.child].start, spans[b.child].start) })
	for _, e := range edges {
		sp, parent := &spans[e.child], &spans[e.parent]
		rec := &Record{Pos: name + ":trace " + sp.trace + " span " + sp.id, TS: time.Unix(0, sp.start).UTC()}
		req := &rec.Request
		req.Method, req.Path, req.Query = spanRequest(sp, parent.op)
		req.Source, req.Destination = parent.service, sp.service
		req.Status = sp.status
		req.Duration = time.Duration(sp.dur)
		o.Apply(rec)
		st.Edges++
		if err := emit(rec); err != nil {
			return st, err
		}
	}
	return st, nil
}

// httpMethods are the methods recognised in operation names.
var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true,
}

// opMethod returns the method of an operation name like "GET", "GET /x",
// "HTTP GET" or "HTTP GET /x", and the rest of the name after it.
func opMethod(op string) (method, rest string) {
	f := strings.Fields(op)
	if len(f) > 1 && strings.EqualFold(f[0], "HTTP") {
		f = f[1:]
	}
	if len(f) == 0 || !httpMethods[strings.ToUpper(f[0])] {
		return "", ""
	}
	if len(f) > 1 {
		rest = f[1]
	}
	return strings.ToUpper(f[0]), rest
}

// spanRequest derives method, path and query of the request a span serves.
func spanRequest(sp *span, parentOp string) (method, path, query string) {
	method = strings.ToUpper(sp.method)
	target := sp.target
	if m, rest := opMethod(sp.op); m != "" {
		method = cmp.Or(method, m)
		if target == "" && strings.HasPrefix(rest, "/") {
			target = rest
		}
	}
	if target == "" {
		op := strings.TrimSpace(sp.op)
		if strings.HasPrefix(op, "/") {
			target = strings.Map(sanitizeOp, op)
		} else {
			target = "/" + strings.Map(sanitizeOp, op)
		}
	}
	if method == "" {
		m, _ := opMethod(parentOp)
		method = cmp.Or(m, "GET")
	}
	path, query = models.SplitTarget(originForm(target))
	return method, path, query
}

// sanitizeOp maps white space and the characters that end a path to '_'.
func sanitizeOp(r rune) rune {
	switch {
	case r <= ' ', r == 0x7f, r == '?', r == '#':
		return '_'
	}
	return r
}

// PodService returns the service of a Kubernetes pod name: the name less
// the suffixes its controller added. "ts-order-service-6d9b8c7f5-x2x9k"
// (Deployment: ReplicaSet template hash, pod suffix), "fluentd-x2x9k"
// (DaemonSet, Job), "mysql-0" (StatefulSet ordinal) and
// "report-28211400-x2x9k" (CronJob) give "ts-order-service", "fluentd",
// "mysql" and "report". A name without such suffixes is returned as it is;
// a trailing number of more than 3 digits is not taken for an ordinal.
func PodService(pod string) string {
	pod = strings.TrimSpace(pod)
	segs := strings.Split(pod, "-")
	n := len(segs)
	switch {
	case n >= 3 && segs[n-3] != "" && isTemplateHash(segs[n-2]) && isPodSuffix(segs[n-1], false):
		return strings.Join(segs[:n-2], "-")
	case n >= 2 && segs[n-2] != "" && isPodSuffix(segs[n-1], true):
		return strings.Join(segs[:n-1], "-")
	case n >= 2 && segs[n-2] != "" && len(segs[n-1]) <= 3 && allDigits(segs[n-1]):
		return strings.Join(segs[:n-1], "-")
	}
	return pod
}

// podAlphabet is the alphabet of Kubernetes generated name suffixes and
// hashes (k8s.io/apimachinery/pkg/util/rand): no vowels, no 0, 1 or 3.
const podAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// isPodSuffix reports whether s is a 5-character generated pod suffix.
// Strictly, its characters are from podAlphabet; after a template hash any
// lower-case letters and digits will do (hand-written examples use them).
func isPodSuffix(s string, strict bool) bool {
	if len(s) != 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if strict && strings.IndexByte(podAlphabet, c) < 0 || !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// isTemplateHash reports whether s is a pod-template-hash: 6 to 10
// characters of podAlphabet (or, before Kubernetes 1.11, decimal digits).
func isTemplateHash(s string) bool {
	if len(s) < 6 || len(s) > 10 {
		return false
	}
	if allDigits(s) {
		return true
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(podAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
