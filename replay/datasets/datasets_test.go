package datasets

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/internal/devdata"
	"github.com/meshward/meshward/models"
)

// writeFile writes data to dir/rel, creating directories.
func writeFile(t *testing.T, dir, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func header(t *testing.T, r models.Request, name string) string {
	t.Helper()
	v, ok := r.Header(name)
	if !ok {
		t.Fatalf("%s %s: no %s header in %v", r.Method, r.Path, name, r.Headers)
	}
	return v
}

func TestNames(t *testing.T) {
	got := strings.Join(Names(), ",")
	if got != "http_params,crs_regression,gotestwaf" {
		t.Fatalf("Names() = %s", got)
	}
	if _, err := Load(t.TempDir(), "nope"); err == nil {
		t.Fatal("Load of an unknown dataset: no error")
	}
	for _, n := range Names() {
		if _, err := Load(t.TempDir(), n); err == nil {
			t.Errorf("Load(%s) of an empty directory: no error", n)
		}
	}
}

func TestSplitOf(t *testing.T) {
	if a, b := SplitOf("d", "k"), SplitOf("d", "k"); a != b {
		t.Fatalf("SplitOf not deterministic: %s, %s", a, b)
	}
	// The definition, computed independently: a change to SplitOf would
	// move examples between splits.
	for i := range 50 {
		key := fmt.Sprint("k", i)
		sum := sha256.Sum256([]byte("gotestwaf\x00" + key))
		want := Test
		switch v := binary.BigEndian.Uint64(sum[:8]) % 100; {
		case v < 60:
			want = Train
		case v < 80:
			want = Dev
		}
		if got := SplitOf("gotestwaf", key); got != want {
			t.Fatalf("SplitOf(gotestwaf, %s) = %s, want %s", key, got, want)
		}
	}
	const n = 10000
	count := map[Split]int{}
	for i := range n {
		count[SplitOf("t", fmt.Sprint("key-", i))]++
	}
	want := map[Split]float64{Train: 0.6, Dev: 0.2, Test: 0.2}
	for s, w := range want {
		got := float64(count[s]) / n
		if got < w-0.03 || got > w+0.03 {
			t.Errorf("split %s: %.3f of keys, want %.2f±0.03", s, got, w)
		}
	}
	if len(count) != 3 {
		t.Errorf("splits seen: %v", count)
	}
	// The dataset name is part of the hash.
	differ := 0
	for i := range 100 {
		k := fmt.Sprint(i)
		if SplitOf("a", k) != SplitOf("b", k) {
			differ++
		}
	}
	if differ == 0 {
		t.Error("SplitOf ignores the dataset name")
	}
}

func TestHTTPParams(t *testing.T) {
	dir := t.TempDir()
	csv := strings.Join([]string{
		`"payload","length","attack_type","label"`,
		`"hello world","11","norm","norm"`, // line 2
		`"1 OR 1=1","8","sqli","anom"`,     // line 3
		`"too","few"`,                      // line 4: wrong field count
		`"bad "quote","3","norm","norm"`,   // line 5: CSV syntax error
		`"x","1","norm","maybe"`,           // line 6: unknown label
		`"hello world","11","norm","norm"`, // line 7: duplicate value
		`"a&b=c","5","xss","anom"`,         // line 8
	}, "\n") + "\n"
	writeFile(t, dir, httpParamsFile, []byte(csv))

	ex, rep, err := LoadWithReport(dir, HTTPParams)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 4 {
		t.Fatalf("%d examples, want 4: %+v", len(ex), ex)
	}
	if rep.Skipped != 3 || len(rep.Problems) != 3 {
		t.Fatalf("report %s, problems %v; want 3 skipped", rep, rep.Problems)
	}
	for i, where := range []string{":4", ":5", ":6"} {
		if !strings.HasSuffix(rep.Problems[i].Where, where) {
			t.Errorf("problem %d at %s, want line %s", i, rep.Problems[i].Where, where)
		}
	}

	n, a := ex[0], ex[1]
	if n.ID != "http_params:2" || n.Attack || n.AttackType != "" {
		t.Errorf("normal example: %+v", n)
	}
	if a.ID != "http_params:3" || !a.Attack || a.AttackType != "sqli" {
		t.Errorf("attack example: %+v", a)
	}
	r := a.Request
	if r.Method != "GET" || r.Path != "/form" || r.Query != "value=1+OR+1%3D1" || r.Body != nil {
		t.Errorf("request shape: %+v", r)
	}
	if r.Source != "client" || r.Destination != HTTPParams {
		t.Errorf("source/destination: %q → %q", r.Source, r.Destination)
	}
	if header(t, r, "host") == "" || !strings.HasPrefix(header(t, r, "user-agent"), "Mozilla/5.0") || header(t, r, "accept") == "" {
		t.Errorf("headers: %v", r.Headers)
	}
	if ex[3].Request.Query != "value=a%26b%3Dc" {
		t.Errorf("query not escaped: %q", ex[3].Request.Query)
	}
	if ex[0].Split != ex[2].Split || ex[0].Split != SplitOf(HTTPParams, "hello world") {
		t.Errorf("duplicate values in different splits: %s, %s", ex[0].Split, ex[2].Split)
	}
}

func TestCRSRegression(t *testing.T) {
	dir := t.TempDir()
	raw := "POST /upload?x=1 HTTP/1.1\r\nHost: h.example\r\nContent-Length: 5\r\nX-B: 2\r\nX-A: 1\r\n\r\nhello"
	lines := []string{
		// line 1: attack, headers (one numeric), body
		`{"file":"REQUEST-942-APPLICATION-ATTACK-SQLI.yaml","category":"REQUEST-942-APPLICATION-ATTACK-SQLI","rule_id":942100,"test_id":1,"stage":1,"label":"rule_fires","method":"POST","uri":"/a/b?id=1","version":"HTTP/1.1","headers":{"User-Agent":"ua","Host":"localhost","Content-Length":3},"data":"x=1","encoded_request":null}`,
		// line 2: second stage of the same test, no body
		`{"file":"REQUEST-942-APPLICATION-ATTACK-SQLI.yaml","category":"REQUEST-942-APPLICATION-ATTACK-SQLI","test_id":1,"stage":2,"label":"rule_must_not_fire","method":"GET","uri":"/","headers":{},"data":null}`,
		// line 3: malformed JSON
		`{"file": "broken"`,
		// line 4: no uri
		`{"file":"f.yaml","category":"REQUEST-920-PROTOCOL-ENFORCEMENT","test_id":2,"stage":1,"label":"rule_fires","method":"GET","headers":{}}`,
		// line 5: neither label
		`{"file":"f.yaml","category":"REQUEST-920-PROTOCOL-ENFORCEMENT","test_id":3,"stage":1,"label":"other","method":"GET","uri":"/","headers":{}}`,
		// line 6: a raw request
		fmt.Sprintf(`{"file":"f.yaml","category":"REQUEST-921-PROTOCOL-ATTACK","test_id":4,"stage":1,"label":"rule_fires","method":null,"uri":null,"headers":null,"data":null,"encoded_request":%q}`, base64.StdEncoding.EncodeToString([]byte(raw))),
		// line 7: a raw request net/http refuses
		fmt.Sprintf(`{"file":"f.yaml","category":"REQUEST-921-PROTOCOL-ATTACK","test_id":5,"stage":1,"label":"rule_fires","encoded_request":%q}`, base64.StdEncoding.EncodeToString([]byte("NOT A REQUEST\r\n\r\n"))),
		// line 8: a body longer than MaxBody
		fmt.Sprintf(`{"file":"f.yaml","category":"REQUEST-942-APPLICATION-ATTACK-SQLI","test_id":6,"stage":1,"label":"rule_fires","method":"POST","uri":"/","headers":{},"data":%q}`, strings.Repeat("a", models.MaxBody+10)),
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	writeFile(t, dir, crsFile, gz.Bytes())

	ex, rep, err := LoadWithReport(dir, CRSRegression)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 4 || rep.Skipped != 4 || rep.Truncated != 1 {
		t.Fatalf("%d examples, report %s; want 4 examples, 4 skipped, 1 truncated", len(ex), rep)
	}
	for i, w := range []string{":3", ":4", ":5", ":7"} {
		if !strings.HasSuffix(rep.Problems[i].Where, w) {
			t.Errorf("problem %d at %s, want line %s", i, rep.Problems[i], w)
		}
	}

	a := ex[0]
	if a.ID != "crs_regression:REQUEST-942-APPLICATION-ATTACK-SQLI.yaml:1:1" || !a.Attack || a.AttackType != "application-attack-sqli" {
		t.Errorf("attack: %+v", a)
	}
	r := a.Request
	if r.Method != "POST" || r.Path != "/a/b" || r.Query != "id=1" || string(r.Body) != "x=1" || r.Destination != CRSRegression || r.Source != "client" {
		t.Errorf("request: %+v", r)
	}
	var names []string
	for _, h := range r.Headers {
		names = append(names, h.Name+"="+h.Value)
	}
	if got := strings.Join(names, ","); got != "content-length=3,host=localhost,user-agent=ua" {
		t.Errorf("headers %s", got)
	}
	n := ex[1]
	if n.Attack || n.AttackType != "" || n.Request.Body != nil || n.Split != a.Split {
		t.Errorf("stage 2: %+v (split %s vs %s)", n, n.Split, a.Split)
	}

	rr := ex[2].Request
	if rr.Method != "POST" || rr.Path != "/upload" || rr.Query != "x=1" || string(rr.Body) != "hello" {
		t.Errorf("raw request: %+v", rr)
	}
	names = names[:0]
	for _, h := range rr.Headers {
		names = append(names, h.Name+"="+h.Value)
	}
	if got := strings.Join(names, ","); got != "content-length=5,host=h.example,x-a=1,x-b=2" {
		t.Errorf("raw headers %s", got)
	}
	if len(ex[3].Request.Body) != models.MaxBody {
		t.Errorf("body of %d bytes, want %d", len(ex[3].Request.Body), models.MaxBody)
	}
}

func TestGoTestWAF(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, gotestwafDir+"/owasp/x.yml", []byte(`---
payload:
  - "a b/<c>"
  - "' OR 1"
encoder:
  - URL
  - Plain
  - Rot13
placeholder:
  - URLPath
  - URLParam
  - Header
  - HTMLForm
  - HTMLMultipartForm
  - JSONRequest
  - RawRequest:
      method: PUT
      path: /api?x=1
      headers:
        X-Token: "{{payload}}"
      body: "v={{payload}}"
  - Bogus
type: SQL Injection
`))
	writeFile(t, dir, gotestwafDir+"/community/big.yml", []byte("payload:\n  - \""+strings.Repeat("z", 3*models.MaxBody)+"\"\nencoder:\n  - URL\nplaceholder:\n  - HTMLForm\ntype: 8KB XSS\n"))
	writeFile(t, dir, gotestwafDir+"/false-pos/texts.yml", []byte("payload:\n  - hello there\n  - select a seat\n"))
	writeFile(t, dir, gotestwafDir+"/owasp/broken.yml", []byte("payload: [unclosed\n"))

	ex, rep, err := LoadWithReport(dir, GoTestWAF)
	if err != nil {
		t.Fatal(err)
	}
	// big: 1; texts: 2 × Plain × 3 defaults; x: 2 payloads × 2 known encoders × 7 known placeholders.
	if want := 1 + 6 + 28; len(ex) != want {
		t.Fatalf("%d examples, want %d", len(ex), want)
	}
	// broken.yml 1; Rot13: 2 × 8; Bogus: 2 × 2.
	if rep.Skipped != 1+16+4 || rep.SkippedBy["unknown encoder Rot13"] != 16 || rep.SkippedBy["unknown placeholder Bogus"] != 4 || rep.SkippedBy["malformed YAML file"] != 1 {
		t.Fatalf("report %s", rep)
	}
	if rep.Truncated != 1 {
		t.Errorf("truncated %d, want 1", rep.Truncated)
	}

	byID := map[string]Example{}
	for _, e := range ex {
		if _, dup := byID[e.ID]; dup {
			t.Fatalf("duplicate id %s", e.ID)
		}
		byID[e.ID] = e
		if e.Request.Source != "client" || e.Request.Destination != GoTestWAF {
			t.Errorf("%s: source/destination %q → %q", e.ID, e.Request.Source, e.Request.Destination)
		}
	}
	get := func(id string) Example {
		t.Helper()
		e, ok := byID["gotestwaf:"+id]
		if !ok {
			t.Fatalf("no example %s", id)
		}
		return e
	}

	big := get("community/big.yml:0:URL:HTMLForm")
	if !big.Attack || big.AttackType != "8kb-xss" || len(big.Request.Body) != models.MaxBody {
		t.Errorf("big: attack %v type %q body %d", big.Attack, big.AttackType, len(big.Request.Body))
	}
	if cl := header(t, big.Request, "content-length"); cl != fmt.Sprint(len("field=")+3*models.MaxBody) {
		t.Errorf("big content-length %s", cl)
	}

	benign := get("false-pos/texts.yml:1:Plain:JSONRequest")
	if benign.Attack || benign.AttackType != "" || string(benign.Request.Body) != `{"field":"select a seat"}` {
		t.Errorf("benign: %+v body %s", benign, benign.Request.Body)
	}
	if get("false-pos/texts.yml:0:Plain:URLParam").Request.Query != "q=hello+there" {
		t.Error("benign URLParam query")
	}

	// All placements of one payload share a split; the type is normalised.
	p0 := get("owasp/x.yml:0:URL:URLPath")
	for id, e := range byID {
		if strings.HasPrefix(id, "gotestwaf:owasp/x.yml:0:") && e.Split != p0.Split {
			t.Errorf("%s in %s, payload 0 elsewhere in %s", id, e.Split, p0.Split)
		}
	}
	if !p0.Attack || p0.AttackType != "sql-injection" || p0.Split != SplitOf(GoTestWAF, "owasp/x.yml\x000") {
		t.Errorf("p0: %+v", p0)
	}

	cases := []struct {
		id, method, path, query, body, hname, hval string
	}{
		// URL-encoded values are placed as they are; others are escaped for the context.
		{"owasp/x.yml:0:URL:URLPath", "GET", "/a+b%2F%3Cc%3E", "", "", "", ""},
		{"owasp/x.yml:0:Plain:URLPath", "GET", "/a%20b%2F%3Cc%3E", "", "", "", ""},
		{"owasp/x.yml:0:URL:URLParam", "GET", "/", "q=a+b%2F%3Cc%3E", "", "", ""},
		{"owasp/x.yml:1:Plain:URLParam", "GET", "/", "q=%27+OR+1", "", "", ""},
		{"owasp/x.yml:1:Plain:Header", "GET", "/", "", "", "x-custom", "' OR 1"},
		{"owasp/x.yml:1:Plain:HTMLForm", "POST", "/", "", "field=%27+OR+1", "content-type", "application/x-www-form-urlencoded"},
		{"owasp/x.yml:1:URL:HTMLForm", "POST", "/", "", "field=%27+OR+1", "content-length", "14"},
		{"owasp/x.yml:0:Plain:JSONRequest", "POST", "/", "", `{"field":"a b/<c>"}`, "content-type", "application/json"},
		{"owasp/x.yml:1:Plain:RawRequest", "PUT", "/api", "x=1", "v=' OR 1", "x-token", "' OR 1"},
	}
	for _, c := range cases {
		r := get(c.id).Request
		if r.Method != c.method || r.Path != c.path || r.Query != c.query || string(r.Body) != c.body {
			t.Errorf("%s: %s %s ? %s body %q", c.id, r.Method, r.Path, r.Query, r.Body)
		}
		if c.hname != "" && header(t, r, c.hname) != c.hval {
			t.Errorf("%s: %s = %q, want %q", c.id, c.hname, header(t, r, c.hname), c.hval)
		}
	}

	mp := get("owasp/x.yml:1:Plain:HTMLMultipartForm").Request
	if ct := header(t, mp, "content-type"); !strings.HasPrefix(ct, "multipart/form-data; boundary=") ||
		!bytes.Contains(mp.Body, []byte("name=\"field\"\r\n\r\n' OR 1\r\n")) {
		t.Errorf("multipart: %s\n%s", ct, mp.Body)
	}
}

func TestEncodersAndPlacements(t *testing.T) {
	for name, want := range map[string]string{
		"Plain":      "<a é>",
		"URL":        "%3Ca+%C3%A9%3E",
		"Base64":     "PGEgw6k+",
		"Base64Flat": "PGEgw6k+",
		"JSUnicode":  `\u003c\u0061\u0020\u00e9\u003e`,
		"XMLEntity":  "&lt;a é&gt;",
	} {
		if got := encoders[name]("<a é>"); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if got := encoders["Base64Flat"]("ab"); got != "YWI" {
		t.Errorf("Base64Flat keeps padding: %q", got)
	}
	for name, p := range placements {
		conf := map[string]any{"method": "POST", "body": "{{payload}}"}
		r, why := p("v", "Plain", conf)
		if why != "" || r.Method == "" || !strings.HasPrefix(r.Path, "/") {
			t.Errorf("%s: %+v %s", name, r, why)
		}
	}
	if _, why := placements["GraphQL"]("v", "Plain", nil); why == "" {
		t.Error("GraphQL without a method placed")
	}
	if _, why := placements["Header"]("a\r\nb", "Plain", nil); why == "" {
		t.Error("CRLF placed in a header")
	}
	g := grpcMessage("hi")
	if !bytes.Equal(g, []byte{0, 0, 0, 0, 4, 0x0a, 2, 'h', 'i'}) {
		t.Errorf("grpc frame % x", g)
	}
	var js map[string]string
	r, _ := placements["JSONRequest"](`"quoted"`, "Plain", nil)
	if err := json.Unmarshal(r.Body, &js); err != nil || js["field"] != `"quoted"` {
		t.Errorf("JSONRequest body %s: %v", r.Body, err)
	}
}

// TestRealData loads the three real datasets and checks their sizes and
// splits. The data directory is $MESHWARD_DATA when set: then missing data
// is a failure, not a skip (make test sets it, so CI cannot pass silently
// without the data). When MESHWARD_DATA is unset it is the default
// ../shared/data beside the repository, and the test is skipped, saying
// so, only if that directory does not exist. Only counts are logged.
func TestRealData(t *testing.T) {
	dir := devdata.Dir(t, "")

	sane := map[string][2]int{
		HTTPParams:    {20000, 21000},
		CRSRegression: {4500, 5200},
		GoTestWAF:     {500, 3000},
	}
	for _, name := range Names() {
		ex, rep, err := LoadWithReport(dir, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %d examples; %s", name, len(ex), rep)
		if r := sane[name]; len(ex) < r[0] || len(ex) > r[1] {
			t.Errorf("%s: %d examples, want %d–%d", name, len(ex), r[0], r[1])
		}
		count := map[Split][2]int{}
		ids := map[string]bool{}
		for _, e := range ex {
			c := count[e.Split]
			if e.Attack {
				c[1]++
			} else {
				c[0]++
			}
			count[e.Split] = c
			if ids[e.ID] {
				t.Errorf("%s: duplicate id %s", name, e.ID)
			}
			ids[e.ID] = true
			r := e.Request
			if r.Method == "" || r.Path == "" || r.Source != "client" || r.Destination != name || len(r.Body) > models.MaxBody {
				t.Errorf("%s: bad request shape for %s", name, e.ID)
			}
			if e.Attack != (e.AttackType != "") && name != CRSRegression {
				t.Errorf("%s: %s attack %v type %q", name, e.ID, e.Attack, e.AttackType)
			}
		}
		for _, s := range Splits() {
			c := count[s]
			t.Logf("%s %-5s normal %6d attack %6d", name, s, c[0], c[1])
			if c[0] == 0 || c[1] == 0 {
				t.Errorf("%s: split %s has %d normal, %d attack examples; want both", name, s, c[0], c[1])
			}
		}
	}
}
