// Package crs scores requests with the OWASP Core Rule Set (CRS 4) running
// in Coraza, the baseline that meshward's evaluation compares against.
//
// It is for evaluation code only: the filter (compiled to wasm) must never
// import it. The rules come from coraza-coreruleset's embedded file system,
// so nothing is read from disk.
//
// The score read is tx.blocking_inbound_anomaly_score after phase 2. In
// CRS 4, detection rules add to per-level counters
// tx.inbound_anomaly_score_pl1..pl4 (a rule above the detection paranoia
// level is skipped and adds nothing), and REQUEST-949-BLOCKING-EVALUATION
// resets tx.blocking_inbound_anomaly_score at the start of its phase-2 block
// and sums pl1..plN into it for N up to tx.blocking_paranoia_level; rule
// 949110 compares that sum with tx.inbound_anomaly_score_threshold (5 by
// default). New sets both paranoia levels to the same value, so the blocking
// and detection totals are equal and the blocking one is exactly what CRS
// would block on.
package crs

import (
	"errors"
	"fmt"
	"strconv"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/meshward/meshward/models"
)

// MinParanoia and MaxParanoia bound the CRS paranoia levels New accepts.
const (
	MinParanoia = 1
	MaxParanoia = 4
)

// ScoreVariable is the TX variable Score reads: CRS 4's inbound anomaly
// total at the blocking paranoia level.
const ScoreVariable = "blocking_inbound_anomaly_score"

// Connection details every transaction is given: a local client talking to
// a local server, as a sidecar sees its application.
const (
	clientAddr = "127.0.0.1"
	clientPort = 40000
	serverAddr = "127.0.0.1"
	serverPort = 8080
)

// Engine is a Coraza WAF loaded with the CRS at one paranoia level, in
// detection-only mode. It is safe for concurrent use.
type Engine struct {
	waf      coraza.WAF
	paranoia int
}

// directives builds the configuration: Coraza's recommended base (for its
// JSON/XML body-processor rules), CRS setup, the paranoia level, then every
// CRS rule file. Settings after the recommended base override it: we never
// see responses, and nothing is audit-logged.
func directives(paranoia int) string {
	return fmt.Sprintf(`
Include @coraza.conf-recommended
SecRuleEngine DetectionOnly
SecRequestBodyAccess On
SecResponseBodyAccess Off
SecAuditEngine Off
Include @crs-setup.conf.example
SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=%[1]d"
SecAction "id:900001,phase:1,pass,t:none,nolog,setvar:tx.detection_paranoia_level=%[1]d"
Include @owasp_crs/*.conf
`, paranoia)
}

// New loads CRS (crs-setup.conf.example and every rules/*.conf from
// coraza-coreruleset's embedded FS) at the given paranoia level, 1 to 4,
// used for both blocking and detection, with SecRuleEngine DetectionOnly so
// every rule runs and request body access on. It returns an error for a
// level outside 1..4 or if the rules fail to load.
func New(paranoia int) (*Engine, error) {
	if paranoia < MinParanoia || paranoia > MaxParanoia {
		return nil, fmt.Errorf("crs: paranoia level %d out of range: must be %d to %d", paranoia, MinParanoia, MaxParanoia)
	}
	waf, err := coraza.NewWAF(coraza.NewWAFConfig().
		WithRootFS(coreruleset.FS).
		WithDirectives(directives(paranoia)))
	if err != nil {
		return nil, fmt.Errorf("crs: loading CRS at paranoia level %d: %w", paranoia, err)
	}
	return &Engine{waf: waf, paranoia: paranoia}, nil
}

// Paranoia returns the paranoia level the engine was loaded with.
func (e *Engine) Paranoia() int { return e.paranoia }

// txVariables is the method Coraza's concrete transaction type has for
// reading its variables; the public Transaction interface lacks it.
type txVariables interface {
	Variables() plugintypes.TransactionVariables
}

// Score returns CRS's inbound anomaly score for one request (the value of
// tx.blocking_inbound_anomaly_score once phase 2 has run; see the package
// doc) and the IDs of the logging rules that matched, in match order without
// repeats. CRS's nolog bookkeeping rules (initialisation, score sums) are
// left out; 949110 is included when the score reaches the threshold.
//
// The request is presented as an HTTP/1.1 server on 127.0.0.1:8080 would
// see it: the query is appended to the path, a "Host: localhost" header is
// added if there is none, and a Content-Length header equal to len(Body) is
// added when there is a body but neither Content-Length nor
// Transfer-Encoding (HTTP/1.1 cannot carry a body without one). The
// Content-Type header chooses the body processor (urlencoded and multipart
// by Coraza itself, JSON and XML by the recommended configuration). Response
// phases are not run.
func (e *Engine) Score(r *models.Request) (score int, ruleIDs []int, err error) {
	if r == nil {
		return 0, nil, errors.New("crs: nil request")
	}
	tx := e.waf.NewTransaction()
	defer func() {
		tx.ProcessLogging()
		if cerr := tx.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("crs: closing transaction: %w", cerr)
		}
	}()

	tx.ProcessConnection(clientAddr, clientPort, serverAddr, serverPort)
	uri := r.Path
	if r.Query != "" {
		uri += "?" + r.Query
	}
	tx.ProcessURI(uri, r.Method, "HTTP/1.1")

	var hasHost, hasLength bool
	for _, h := range r.Headers {
		tx.AddRequestHeader(h.Name, h.Value)
		switch h.Name {
		case "host":
			hasHost = true
		case "content-length", "transfer-encoding":
			hasLength = true
		}
	}
	if !hasHost {
		tx.AddRequestHeader("host", "localhost")
	}
	if len(r.Body) > 0 && !hasLength {
		tx.AddRequestHeader("content-length", strconv.Itoa(len(r.Body)))
	}
	tx.ProcessRequestHeaders()

	if len(r.Body) > 0 {
		if _, _, err := tx.WriteRequestBody(r.Body); err != nil {
			return 0, nil, fmt.Errorf("crs: writing request body: %w", err)
		}
	}
	if _, err := tx.ProcessRequestBody(); err != nil {
		return 0, nil, fmt.Errorf("crs: processing request body: %w", err)
	}

	score, err = readScore(tx)
	if err != nil {
		return 0, nil, err
	}
	return score, matchedIDs(tx.MatchedRules()), nil
}

// readScore reads ScoreVariable from the transaction's TX collection.
func readScore(tx types.Transaction) (int, error) {
	v, ok := tx.(txVariables)
	if !ok {
		return 0, fmt.Errorf("crs: coraza transaction %T does not expose its variables", tx)
	}
	vals := v.Variables().TX().Get(ScoreVariable)
	if len(vals) == 0 {
		return 0, fmt.Errorf("crs: tx.%s not set: are the CRS rules loaded?", ScoreVariable)
	}
	n, err := strconv.Atoi(vals[0])
	if err != nil {
		return 0, fmt.Errorf("crs: tx.%s = %q: %w", ScoreVariable, vals[0], err)
	}
	return n, nil
}

// logger is the method Coraza's concrete matched-rule type has for telling
// whether the rule logs; the public MatchedRule interface lacks it (Coraza
// plans to add it in v4).
type logger interface {
	Log() bool
}

// matchedIDs lists the IDs of the logging rules among matched, in order,
// without repeats. A matched rule that cannot say whether it logs is kept.
func matchedIDs(matched []types.MatchedRule) []int {
	var ids []int
	seen := make(map[int]bool, len(matched))
	for _, m := range matched {
		if l, ok := m.(logger); ok && !l.Log() {
			continue
		}
		id := m.Rule().ID()
		if id == 0 || seen[id] {
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	return ids
}
