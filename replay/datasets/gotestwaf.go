package datasets

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io/fs"
	"mime/multipart"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"

	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/models"
)

// gotestwafDir holds the GoTestWAF testcases, relative to the data directory.
const gotestwafDir = "gotestwaf/testcases"

// gotestwafBenignDir is the testcases subdirectory of benign texts.
const gotestwafBenignDir = "false-pos"

// gtwFile is one GoTestWAF testcase file.
type gtwFile struct {
	Payload     []yaml.Node `yaml:"payload"`
	Encoder     []string    `yaml:"encoder"`
	Placeholder []yaml.Node `yaml:"placeholder"`
	Type        string      `yaml:"type"`
}

// gtwPlaceholder is a placeholder entry: a bare name, or a one-key mapping
// from the name to its configuration (RawRequest, GraphQL).
type gtwPlaceholder struct {
	name   string // as in the file
	label  string // name, made unique within the file for IDs
	config map[string]any
}

// Defaults used when a testcase file lists no encoders or no placeholders.
var (
	defaultEncoders     = []string{"Plain"}
	defaultPlaceholders = []string{"URLParam", "HTMLForm", "JSONRequest"}
)

// loadGoTestWAF expands gotestwaf/testcases/**/*.yml. Every file outside
// false-pos/ is attack payloads: each payload × encoder × placeholder becomes
// one request, Attack true, AttackType the file's type lower-cased with
// spaces as '-'. Files in false-pos/ (texts.yml) are benign texts expanded
// the same way with Attack false. A file that lists no encoders gets Plain,
// and one that lists no placeholders gets URLParam, HTMLForm and
// JSONRequest.
//
// Encoders and placeholders are described at encoders and placements.
// Unknown encoders or placeholders, bad placeholder configurations, values
// that cannot be carried (a CR, LF or NUL in a header) and non-string
// payloads are skipped and counted, per generated request, in the Report
// under a reason naming them. A file that is not valid YAML is skipped as
// one entry. Bodies are cut to models.MaxBody and counted in
// Report.Truncated.
//
// IDs are "gotestwaf:<file>:<payload index>:<encoder>:<placeholder>" with
// the file relative to testcases/ and the payload index 0-based; a
// placeholder listed twice in one file gets "#2", "#3"… The split key is file
// and payload index, so every encoding and placement of a payload shares a
// split.
func loadGoTestWAF(dir string) ([]Example, Report, error) {
	var rep Report
	root := filepath.Join(dir, gotestwafDir)
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yml") || strings.HasSuffix(path, ".yaml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, rep, fmt.Errorf("datasets: %s: %w", GoTestWAF, err)
	}
	if len(files) == 0 {
		return nil, rep, fmt.Errorf("datasets: %s: no testcases under %s", GoTestWAF, root)
	}

	var out []Example
	for _, path := range files { // WalkDir visits in lexical order
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return nil, rep, err
		}
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, rep, fmt.Errorf("datasets: %s: %w", GoTestWAF, err)
		}
		benign := strings.HasPrefix(rel, gotestwafBenignDir+"/")
		out = expandTestcase(out, &rep, rel, data, benign)
	}
	return out, rep, nil
}

// expandTestcase appends the requests of one testcase file to out.
func expandTestcase(out []Example, rep *Report, rel string, data []byte, benign bool) []Example {
	var tc gtwFile
	if err := yaml.Unmarshal(data, &tc); err != nil {
		rep.skip(rel, "malformed YAML file")
		return out
	}
	encs := tc.Encoder
	if len(encs) == 0 {
		encs = defaultEncoders
	}
	var phs []gtwPlaceholder
	seen := map[string]int{}
	if len(tc.Placeholder) == 0 {
		for _, n := range defaultPlaceholders {
			phs = append(phs, gtwPlaceholder{name: n, label: n})
		}
	}
	for i := range tc.Placeholder {
		ph, ok := parsePlaceholder(&tc.Placeholder[i])
		if !ok {
			// Every request that would have used it is lost.
			for range len(tc.Payload) * len(encs) {
				rep.skip(fmt.Sprintf("%s:placeholder %d", rel, i), "malformed placeholder entry")
			}
			continue
		}
		seen[ph.name]++
		if k := seen[ph.name]; k > 1 {
			ph.label += "#" + strconv.Itoa(k)
		}
		phs = append(phs, ph)
	}
	attackType := ""
	if !benign {
		attackType = strings.ReplaceAll(strings.ToLower(strings.TrimSpace(tc.Type)), " ", "-")
	}

	for pi := range tc.Payload {
		node := &tc.Payload[pi]
		key := rel + "\x00" + strconv.Itoa(pi)
		split := SplitOf(GoTestWAF, key)
		for _, enc := range encs {
			for _, ph := range phs {
				where := fmt.Sprintf("%s:%d:%s:%s", rel, pi, enc, ph.label)
				if node.Kind != yaml.ScalarNode || node.Tag == "!!null" {
					rep.skip(where, "payload is not a string")
					continue
				}
				encode, ok := encoders[enc]
				if !ok {
					rep.skip(where, "unknown encoder "+enc)
					continue
				}
				place, ok := placements[ph.name]
				if !ok {
					rep.skip(where, "unknown placeholder "+ph.name)
					continue
				}
				req, why := place(encode(node.Value), enc, ph.config)
				if why != "" {
					rep.skip(where, why)
					continue
				}
				var cut bool
				if req.Body, cut = capBody(req.Body); cut {
					rep.Truncated++
				}
				req.Source = source
				req.Destination = GoTestWAF
				out = append(out, Example{
					ID:         GoTestWAF + ":" + where,
					Request:    req,
					Attack:     !benign,
					AttackType: attackType,
					Split:      split,
				})
			}
		}
	}
	return out
}

// parsePlaceholder reads a placeholder entry: a name, or {name: config}.
func parsePlaceholder(n *yaml.Node) (gtwPlaceholder, bool) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == "" {
			return gtwPlaceholder{}, false
		}
		return gtwPlaceholder{name: n.Value, label: n.Value}, true
	case yaml.MappingNode:
		if len(n.Content) != 2 || n.Content[0].Kind != yaml.ScalarNode {
			return gtwPlaceholder{}, false
		}
		name := n.Content[0].Value
		var conf map[string]any
		if err := n.Content[1].Decode(&conf); err != nil {
			return gtwPlaceholder{}, false
		}
		return gtwPlaceholder{name: name, label: name, config: conf}, true
	}
	return gtwPlaceholder{}, false
}

// encoders turns a payload into the string a client would send, after
// GoTestWAF's encoders of the same name (our own implementations):
//
//   - Plain: unchanged.
//   - URL: url.QueryEscape.
//   - Base64: standard base64 with padding.
//   - Base64Flat: standard base64 without '=' padding.
//   - JSUnicode: every UTF-16 code unit as \uXXXX (lower-case hex).
//   - XMLEntity: XML character escaping (&, <, >, quotes and the like).
var encoders = map[string]func(string) string{
	"Plain":      func(s string) string { return s },
	"URL":        url.QueryEscape,
	"Base64":     func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	"Base64Flat": func(s string) string { return base64.RawStdEncoding.EncodeToString([]byte(s)) },
	"JSUnicode":  jsUnicode,
	"XMLEntity":  xmlEscape,
}

func jsUnicode(s string) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(s)) {
		fmt.Fprintf(&b, "\\u%04x", u)
	}
	return b.String()
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // writes to a bytes.Buffer cannot fail
	return b.String()
}

// placement builds a request carrying value, the payload after encoder enc.
// why is non-empty when the value cannot be placed.
type placement func(value, enc string, config map[string]any) (req models.Request, why string)

// placements puts an encoded payload into a request, after GoTestWAF's
// placeholders of the same name (our own implementations, with fixed names
// where GoTestWAF draws random ones):
//
//   - URLPath: GET /<value>.
//   - URLParam: GET /?q=<value>.
//   - Header: GET / with the value in an "x-custom" header.
//   - UserAgent: GET / with the value as the user-agent.
//   - HTMLForm: POST / application/x-www-form-urlencoded, body field=<value>.
//   - HTMLMultipartForm: POST / multipart/form-data, one field "field".
//   - JSONRequest: POST / application/json, body {"field": "<value>"}.
//   - JSONBody: POST / application/json, the value as the whole body.
//   - XMLBody: POST / text/xml, the value as the whole body.
//   - SOAPBody: POST / text/xml with a soapaction header, the value
//     XML-escaped inside a SOAP envelope.
//   - RequestBody: POST /, the value as the whole body, no content-type.
//   - GraphQL: config method GET: GET /graphql?query=<value>; POST: POST
//     /graphql application/json, the value as the body.
//   - gRPC: POST /meshward.example.Echo/Say, application/grpc, one
//     length-prefixed protobuf message whose field 1 is the value.
//   - RawRequest: config method, path (default "/"), headers and body, with
//     "{{payload}}" replaced by the value.
//
// In the URL and form placements the value is escaped for its context
// (url.QueryEscape, or url.PathEscape in the path) unless the encoder is URL,
// whose output is already escaped and is placed as is, as GoTestWAF does
// (no double encoding). Every request has the base headers (host,
// user-agent, accept); requests with a body add content-type (where the
// placeholder has one) and content-length of the whole, untruncated body.
var placements = map[string]placement{
	"URLPath": func(v, enc string, _ map[string]any) (models.Request, string) {
		p := v
		if enc != "URL" {
			p = url.PathEscape(v)
		}
		return models.Request{Method: "GET", Path: "/" + p, Headers: baseHeaders()}, ""
	},
	"URLParam": func(v, enc string, _ map[string]any) (models.Request, string) {
		return models.Request{Method: "GET", Path: "/", Query: "q=" + queryValue(v, enc), Headers: baseHeaders()}, ""
	},
	"Header": func(v, _ string, _ map[string]any) (models.Request, string) {
		if !validHeaderValue(v) {
			return models.Request{}, "value not valid in a header"
		}
		h := append(baseHeaders(), models.Header{Name: "x-custom", Value: v})
		return models.Request{Method: "GET", Path: "/", Headers: h}, ""
	},
	"UserAgent": func(v, _ string, _ map[string]any) (models.Request, string) {
		if !validHeaderValue(v) {
			return models.Request{}, "value not valid in a header"
		}
		return models.Request{Method: "GET", Path: "/", Headers: setHeader(baseHeaders(), "user-agent", v)}, ""
	},
	"HTMLForm": func(v, enc string, _ map[string]any) (models.Request, string) {
		return post("/", "application/x-www-form-urlencoded", []byte("field="+queryValue(v, enc))), ""
	},
	"HTMLMultipartForm": func(v, _ string, _ map[string]any) (models.Request, string) {
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		if err := w.SetBoundary(multipartBoundary); err != nil {
			panic(err) // a constant, valid boundary
		}
		fw, _ := w.CreateFormField("field") // writes to a bytes.Buffer cannot fail
		_, _ = fw.Write([]byte(v))
		w.Close()
		return post("/", w.FormDataContentType(), b.Bytes()), ""
	},
	"JSONRequest": func(v, _ string, _ map[string]any) (models.Request, string) {
		var b bytes.Buffer
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(false)
		if err := e.Encode(map[string]string{"field": v}); err != nil {
			return models.Request{}, "value not encodable as JSON"
		}
		return post("/", "application/json", bytes.TrimSuffix(b.Bytes(), []byte("\n"))), ""
	},
	"JSONBody": func(v, _ string, _ map[string]any) (models.Request, string) {
		return post("/", "application/json", []byte(v)), ""
	},
	"XMLBody": func(v, _ string, _ map[string]any) (models.Request, string) {
		return post("/", "text/xml", []byte(v)), ""
	},
	"SOAPBody": func(v, _ string, _ map[string]any) (models.Request, string) {
		r := post("/", "text/xml; charset=utf-8", []byte(fmt.Sprintf(soapEnvelope, xmlEscape(v))))
		r.Headers = append(r.Headers, models.Header{Name: "soapaction", Value: `"urn:example:Search"`})
		return r, ""
	},
	"RequestBody": func(v, _ string, _ map[string]any) (models.Request, string) {
		return post("/", "", []byte(v)), ""
	},
	"GraphQL": func(v, enc string, conf map[string]any) (models.Request, string) {
		switch method, _ := conf["method"].(string); method {
		case "GET":
			return models.Request{Method: "GET", Path: "/graphql", Query: "query=" + queryValue(v, enc), Headers: baseHeaders()}, ""
		case "POST":
			return post("/graphql", "application/json", []byte(v)), ""
		}
		return models.Request{}, "GraphQL placeholder without method GET or POST"
	},
	"gRPC": func(v, _ string, _ map[string]any) (models.Request, string) {
		r := post("/meshward.example.Echo/Say", "application/grpc", grpcMessage(v))
		r.Headers = append(r.Headers, models.Header{Name: "te", Value: "trailers"})
		return r, ""
	},
	"RawRequest": rawRequest,
}

const multipartBoundary = "meshwardformboundary7MA4YWxkTrZu0gW"

const soapEnvelope = `<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <Search xmlns="urn:example">
      <field>%s</field>
    </Search>
  </soap:Body>
</soap:Envelope>`

// queryValue escapes v for a query or form value unless encoder enc (URL)
// already did.
func queryValue(v, enc string) string {
	if enc == "URL" {
		return v
	}
	return url.QueryEscape(v)
}

// validHeaderValue reports whether v can be sent as an HTTP header value.
func validHeaderValue(v string) bool {
	return !strings.ContainsAny(v, "\r\n\x00")
}

// setHeader replaces the value of header name, or appends it.
func setHeader(h []models.Header, name, value string) []models.Header {
	for i := range h {
		if h[i].Name == name {
			h[i].Value = value
			return h
		}
	}
	return append(h, models.Header{Name: name, Value: value})
}

// post builds a POST with the base headers, content-type (if not empty)
// and content-length. The body is cut later.
func post(path, contentType string, body []byte) models.Request {
	h := baseHeaders()
	if contentType != "" {
		h = append(h, models.Header{Name: "content-type", Value: contentType})
	}
	h = append(h, models.Header{Name: "content-length", Value: strconv.Itoa(len(body))})
	return models.Request{Method: "POST", Path: path, Headers: h, Body: body}
}

// grpcMessage frames a protobuf message {1: v} as a gRPC length-prefixed,
// uncompressed message.
func grpcMessage(v string) []byte {
	msg := []byte{0x0a} // field 1, wire type 2 (length-delimited)
	msg = binary.AppendUvarint(msg, uint64(len(v)))
	msg = append(msg, v...)
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	return append(frame, msg...)
}

// payloadMark is what RawRequest replaces with the payload.
const payloadMark = "{{payload}}"

// rawRequest builds a request from a RawRequest configuration.
func rawRequest(v, _ string, conf map[string]any) (models.Request, string) {
	const bad = "bad RawRequest configuration"
	method, ok := conf["method"].(string)
	if !ok || method == "" {
		return models.Request{}, bad
	}
	path := "/"
	if p, ok := conf["path"]; ok {
		if path, ok = p.(string); !ok {
			return models.Request{}, bad
		}
	}
	path = "/" + strings.TrimPrefix(strings.ReplaceAll(path, payloadMark, v), "/")
	var body string
	if b, ok := conf["body"]; ok {
		if body, ok = b.(string); !ok {
			return models.Request{}, bad
		}
	}
	body = strings.ReplaceAll(body, payloadMark, v)

	h := baseHeaders()
	if hs, ok := conf["headers"]; ok {
		m, ok := hs.(map[string]any)
		if !ok {
			return models.Request{}, bad
		}
		var extra []models.Header
		for name, val := range m {
			s, ok := val.(string)
			if !ok {
				return models.Request{}, bad
			}
			s = strings.ReplaceAll(s, payloadMark, v)
			if !validHeaderValue(s) {
				return models.Request{}, "value not valid in a header"
			}
			extra = append(extra, models.Header{Name: strings.ToLower(name), Value: s})
		}
		sortHeaders(extra)
		for _, e := range extra {
			h = setHeader(h, e.Name, e.Value)
		}
	}
	r := models.Request{Method: method, Headers: h}
	r.Path, r.Query = models.SplitTarget(path)
	if body != "" {
		r.Body = []byte(body)
		r.Headers = setHeader(r.Headers, "content-length", strconv.Itoa(len(body)))
	}
	return r, ""
}
