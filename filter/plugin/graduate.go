package plugin

import (
	"time"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
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
// its record (record.AppendDecision): the collector stores it for meshward
// preview and the trainer.
func appendDecision(rec []byte, v *models.Verdict, d *enforcement.Decision, enforced bool) []byte {
	return record.AppendDecision(rec, v, &record.Decision{Deny: d.Deny, WouldDeny: d.WouldDeny, Enforced: enforced,
		Excepted: d.Excepted, Param: d.Param, Shape: d.Shape, HaveParam: d.HaveParam})
}
