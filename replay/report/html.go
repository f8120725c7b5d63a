package report

import (
	"fmt"
	"html/template"
	"io"
	"sort"
	"strings"

	"github.com/meshward/meshward/replay/runner"
	"github.com/meshward/meshward/replay/source"
)

// WriteHTML writes a self-contained page (no script, no external resource:
// readable offline) with the summary, the ROC curve when the traffic is
// labelled, the score distributions, and the top requests.
func (r *Report) WriteHTML(w io.Writer, recs []*source.Record, res []runner.Result) error {
	var normal, attack []float64
	var all []float64
	for i, rec := range recs {
		s := res[i].Score
		all = append(all, s)
		if rec.Label == "" {
			continue
		}
		if rec.IsAttack() {
			attack = append(attack, s)
		} else {
			normal = append(normal, s)
		}
	}
	data := struct {
		R         *Report
		ROC       template.HTML
		Histogram template.HTML
	}{R: r}
	if len(normal) > 0 && len(attack) > 0 {
		data.ROC = rocSVG(normal, attack)
		data.Histogram = histogramSVG([][]float64{normal, attack}, []string{"normal", "attack"}, []string{"#3b7dd8", "#d8453b"}, r.Threshold)
	} else {
		data.Histogram = histogramSVG([][]float64{all}, []string{"all requests"}, []string{"#3b7dd8"}, r.Threshold)
	}
	return pageTmpl.Execute(w, data)
}

const (
	plotW, plotH = 420, 300
	margin       = 40
)

// rocSVG draws the ROC curve: true-positive against false-positive rate as
// the threshold sweeps the scores.
func rocSVG(normal, attack []float64) template.HTML {
	type pt struct{ fpr, tpr float64 }
	thresholds := append(append([]float64(nil), normal...), attack...)
	sort.Sort(sort.Reverse(sort.Float64Slice(thresholds)))
	pts := []pt{{0, 0}}
	for i, t := range thresholds {
		if i > 0 && t == thresholds[i-1] {
			continue
		}
		pts = append(pts, pt{share(normal, t), share(attack, t)})
	}
	pts = append(pts, pt{1, 1})
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" role="img" aria-label="ROC curve">`, plotW+2*margin, plotH+2*margin)
	axes(&b, "false-positive rate", "true-positive rate")
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#bbb" stroke-dasharray="4"/>`, margin, margin+plotH, margin+plotW, margin)
	b.WriteString(`<polyline fill="none" stroke="#d8453b" stroke-width="2" points="`)
	for _, p := range pts {
		fmt.Fprintf(&b, "%.1f,%.1f ", float64(margin)+p.fpr*plotW, float64(margin+plotH)-p.tpr*plotH)
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String())
}

// share returns the fraction of xs at or above t.
func share(xs []float64, t float64) float64 {
	n := 0
	for _, x := range xs {
		if x >= t {
			n++
		}
	}
	return float64(n) / float64(len(xs))
}

// histogramSVG draws each series' score distribution over 20 bins, as shares
// of that series, with the threshold marked.
func histogramSVG(series [][]float64, names, colors []string, threshold float64) template.HTML {
	const bins = 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" role="img" aria-label="score distributions">`, plotW+2*margin, plotH+2*margin)
	axes(&b, "score", "share of requests")
	bw := float64(plotW) / bins / float64(len(series))
	for si, xs := range series {
		var h [bins]int
		for _, x := range xs {
			h[min(bins-1, int(x*bins))]++
		}
		for i, c := range h {
			if c == 0 {
				continue
			}
			height := float64(c) / float64(len(xs)) * plotH
			x := float64(margin) + float64(i)*float64(plotW)/bins + float64(si)*bw
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %.2f–%.2f: %d</title></rect>`,
				x, float64(margin+plotH)-height, bw, height, colors[si], names[si], float64(i)/bins, float64(i+1)/bins, c)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s" font-size="12">■ %s (%d)</text>`, margin+plotW-120, margin+14+14*si, colors[si], names[si], len(xs))
	}
	tx := float64(margin) + threshold*plotW
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333" stroke-dasharray="3"/><text x="%.1f" y="%d" font-size="11">threshold</text>`,
		tx, margin, tx, margin+plotH, tx+3, margin+10)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func axes(b *strings.Builder, xLabel, yLabel string) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`, margin, margin, plotW, plotH)
	for i := 0; i <= 4; i++ {
		v := float64(i) / 4
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%.2f</text>`, float64(margin)+v*plotW, margin+plotH+14, v)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" font-size="10" text-anchor="end">%.2f</text>`, margin-4, float64(margin+plotH)-v*plotH+3, v)
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="12" text-anchor="middle">%s</text>`, margin+plotW/2, margin+plotH+32, xLabel)
	fmt.Fprintf(b, `<text x="12" y="%d" font-size="12" text-anchor="middle" transform="rotate(-90 12 %d)">%s</text>`, margin+plotH/2, margin+plotH/2, yLabel)
}

var pageTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":  func(x float64) string { return fmt.Sprintf("%.2f%%", 100*x) },
	"join": strings.Join,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshward replay report</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:2em}code{font-size:12px}</style></head><body>
<h1>meshward replay report</h1>
<p>{{.R.Requests}} requests through the <b>{{.R.Runner}}</b> runner, model <code>{{.R.Model}}</code>, threshold {{printf "%.3f" .R.Threshold}}.
Scored {{.R.Scored}}, unscored {{.R.Unscored}}, flagged {{.R.Flagged}}.</p>
{{with .R.Evaluation}}<h2>Detection</h2>
<table><tr><th>normal</th><th>attacks</th><th>ROC AUC</th><th>PR AUC</th><th>caught at 0.1% FPR</th><th>caught at 1% FPR</th><th>precision</th><th>recall</th><th>false-positive rate</th></tr>
<tr><td>{{.Normal}}</td><td>{{.Attacks}}</td><td>{{printf "%.4f" .ROCAUC}}</td><td>{{printf "%.4f" .PRAUC}}</td><td>{{pct .TPRAt01}}</td><td>{{pct .TPRAt1}}</td>
<td>{{printf "%.4f" .AtThreshold.Precision}}</td><td>{{printf "%.4f" .AtThreshold.Recall}}</td><td>{{pct .AtThreshold.FPR}}</td></tr></table>
<h3>By attack type</h3><table><tr><th>type</th><th>caught</th><th>of</th></tr>{{range .PerType}}<tr><td>{{.Type}}</td><td>{{.Caught}}</td><td>{{.Total}}</td></tr>{{end}}</table>{{end}}
<div class="plots">{{if .ROC}}<figure>{{.ROC}}<figcaption>ROC curve</figcaption></figure>{{end}}<figure>{{.Histogram}}<figcaption>Score distributions</figcaption></figure></div>
<h2>Highest scores</h2>
<table><tr><th>score</th><th>source</th><th>destination</th><th>request</th><th>reasons</th><th>label</th><th>where</th></tr>
{{range .R.Top}}<tr><td>{{printf "%.3f" .Score}}</td><td>{{.Src}}</td><td>{{.Dst}}</td><td><code>{{.Method}} {{.Path}}</code></td><td>{{join .Reasons ", "}}</td><td>{{.Label}} {{.AttackType}}</td><td>{{.Pos}}</td></tr>{{end}}</table>
{{if .R.Problems}}<h2>Skipped entries</h2><ul>{{range .R.Problems}}<li><code>{{.}}</code></li>{{end}}</ul>{{end}}
</body></html>
`))
