package plugin

import (
	"time"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// headerDenied names, on a 403 the filter sends, the reason it denied the
// request for (one of deny_reasons).
const headerDenied = "x-meshward-denied"

// decide applies the policy to a flagged request — graduated enforcement
// and the exceptions (package enforcement) — and reports whether enforce
// mode denies it. Monitor mode decides too: the record says what enforce
// would have done (meshward preview). It runs for flagged requests only.
func (h *httpContext) decide(s *pluginconfig.Settings, scratch *models.Scratch) bool {
	h.decision = s.Policy.Decide(s.Section, &h.req, &h.verdict, scratch, s.Threshold, time.Now())
	return h.decision.Denied()
}

// appendDecision adds what the policy decided about a flagged request to
// its record (encodeRecord's JSON object, whose closing brace it reopens):
// the reasons, the reason enforce denies it for ("deny"; "enforced" when
// this filter did), the reason it would have been denied for but for the
// exceptions ("would_deny"), the exceptions that set a reason aside, and
// the parameter and value shape behind a value reason. The collector
// stores them for meshward preview and the trainer.
func appendDecision(rec []byte, v *models.Verdict, d *enforcement.Decision, enforced bool) []byte {
	if len(rec) == 0 || rec[len(rec)-1] != '}' {
		return rec
	}
	b := rec[:len(rec)-1]
	b = append(b, `,"reasons":[`...)
	for i, r := range v.ReasonList() {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, r.Code.String())
	}
	b = append(b, ']')
	if d.Deny != models.ReasonNone {
		b = append(b, `,"deny":`...)
		b = appendJSONString(b, d.Deny.String())
		if enforced {
			b = append(b, `,"enforced":true`...)
		}
	} else if d.WouldDeny != models.ReasonNone {
		b = append(b, `,"would_deny":`...)
		b = appendJSONString(b, d.WouldDeny.String())
	}
	if len(d.Excepted) > 0 {
		b = append(b, `,"excepted":[`...)
		for i, id := range d.Excepted {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, id)
		}
		b = append(b, ']')
	}
	if d.HaveParam {
		b = append(b, `,"deny_param":`...)
		b = appendJSONString(b, d.Param)
		b = append(b, `,"deny_shape":`...)
		b = appendJSONString(b, d.Shape)
	}
	return append(b, '}')
}
