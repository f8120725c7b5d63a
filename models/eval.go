package models

import (
	"math"
	"sort"
)

// Labelled is one scored, labelled example for evaluation.
type Labelled struct {
	Score  float64
	Attack bool
	Type   string // attack type; "" for normal traffic
}

// Confusion is a confusion matrix at one threshold (flagged = score > threshold).
type Confusion struct {
	TP, FP, TN, FN int
}

// Precision returns TP/(TP+FP), or 0 when nothing was flagged.
func (c Confusion) Precision() float64 { return ratio(c.TP, c.TP+c.FP) }

// Recall returns TP/(TP+FN), or 0 when there were no attacks.
func (c Confusion) Recall() float64 { return ratio(c.TP, c.TP+c.FN) }

// FPR returns FP/(FP+TN), or 0 when there was no normal traffic.
func (c Confusion) FPR() float64 { return ratio(c.FP, c.FP+c.TN) }

// F1 returns the harmonic mean of precision and recall, 2TP/(2TP+FP+FN),
// or 0 when nothing was flagged and there were no attacks.
func (c Confusion) F1() float64 { return ratio(2*c.TP, 2*c.TP+c.FP+c.FN) }

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// TypeRecall is how many attacks of one type were caught at the threshold.
type TypeRecall struct {
	Type           string
	Caught, Total  int
	RecallAt01, At float64 // recall at the 0.1 % FPR operating point, and at the threshold
}

// Evaluation holds every figure meshward reports for a labelled set.
type Evaluation struct {
	Normal, Attacks int
	ROCAUC, PRAUC   float64
	// TPRAt01 and TPRAt1 are the shares of attacks caught at 0.1 % and 1 %
	// false positives (the strictest threshold that keeps the normal traffic
	// flagged at or under that rate).
	TPRAt01, TPRAt1 float64
	Threshold       float64
	AtThreshold     Confusion
	// BestF1 is the highest F1 of any cut (flag = score > BestCut): what a
	// threshold chosen on these very labels would reach, the figure
	// published detectors report. AtThreshold.F1() is what the detector's
	// own threshold reaches.
	BestF1, BestCut float64
	PerType         []TypeRecall
}

// Evaluate computes every figure for examples scored by one detector, with
// the detector's own threshold for the confusion matrix.
func Evaluate(xs []Labelled, threshold float64) Evaluation {
	e := Evaluation{Threshold: threshold}
	var neg []float64
	for _, x := range xs {
		if x.Attack {
			e.Attacks++
		} else {
			e.Normal++
			neg = append(neg, x.Score)
		}
		switch {
		case x.Attack && x.Score > threshold:
			e.AtThreshold.TP++
		case x.Attack:
			e.AtThreshold.FN++
		case x.Score > threshold:
			e.AtThreshold.FP++
		default:
			e.AtThreshold.TN++
		}
	}
	e.ROCAUC = rocAUC(xs)
	e.PRAUC = averagePrecision(xs)
	e.BestF1, e.BestCut = bestF1(xs)
	sort.Float64s(neg)
	t01, t1 := ThresholdAtFPR(neg, 0.001), ThresholdAtFPR(neg, 0.01)
	e.TPRAt01, e.TPRAt1 = tprAbove(xs, t01), tprAbove(xs, t1)

	types := map[string]*TypeRecall{}
	var names []string
	for _, x := range xs {
		if !x.Attack {
			continue
		}
		tr := types[x.Type]
		if tr == nil {
			tr = &TypeRecall{Type: x.Type}
			types[x.Type] = tr
			names = append(names, x.Type)
		}
		tr.Total++
		if x.Score > threshold {
			tr.Caught++
		}
		if x.Score > t01 {
			tr.RecallAt01++
		}
	}
	sort.Strings(names)
	for _, n := range names {
		tr := types[n]
		tr.At = ratio(tr.Caught, tr.Total)
		tr.RecallAt01 /= float64(tr.Total)
		e.PerType = append(e.PerType, *tr)
	}
	return e
}

// ThresholdAtFPR returns the lowest threshold (flag = score > threshold) that
// flags at most a share fpr of the sorted normal scores.
func ThresholdAtFPR(sortedNormal []float64, fpr float64) float64 {
	n := len(sortedNormal)
	if n == 0 {
		return math.Inf(-1)
	}
	allowed := int(math.Floor(fpr * float64(n)))
	if allowed >= n {
		return math.Inf(-1)
	}
	// The (allowed+1)-th highest normal score must not be flagged.
	return sortedNormal[n-1-allowed]
}

func tprAbove(xs []Labelled, t float64) float64 {
	var caught, total int
	for _, x := range xs {
		if x.Attack {
			total++
			if x.Score > t {
				caught++
			}
		}
	}
	return ratio(caught, total)
}

// rocAUC is the Mann–Whitney statistic: the chance that a random attack
// scores above a random normal example, ties counting half.
func rocAUC(xs []Labelled) float64 {
	s := append([]Labelled(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Score < s[j].Score })
	var pos, neg, rankSum float64
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j].Score == s[i].Score {
			j++
		}
		avgRank := float64(i+j+1) / 2 // ranks are 1-based
		for k := i; k < j; k++ {
			if s[k].Attack {
				rankSum += avgRank
				pos++
			} else {
				neg++
			}
		}
		i = j
	}
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

// bestF1 returns the highest F1 over every cut between distinct scores
// (flag = score > cut), and that cut.
func bestF1(xs []Labelled) (best, cut float64) {
	s := append([]Labelled(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Score > s[j].Score })
	var attacks int
	for _, x := range s {
		if x.Attack {
			attacks++
		}
	}
	if len(s) > 0 {
		cut = s[0].Score
	}
	flaggedDownTo(s, func(tp, fp, j int) {
		// Flagging everything down to this score: the cut lies just below
		// it (one below the lowest score when everything is flagged: a
		// finite number, for JSON).
		if f := ratio(2*tp, 2*tp+fp+(attacks-tp)); f > best {
			best = f
			cut = s[len(s)-1].Score - 1
			if j < len(s) {
				cut = s[j].Score
			}
		}
	})
	return best, cut
}

// flaggedDownTo walks s, sorted by descending score, a group of tied
// scores at a time: after each, it calls f with the attacks and normal
// examples flagged when everything down to that score is, and the index of
// the next group.
func flaggedDownTo(s []Labelled, f func(tp, fp, next int)) {
	tp, fp := 0, 0
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j].Score == s[i].Score {
			if s[j].Attack {
				tp++
			} else {
				fp++
			}
			j++
		}
		f(tp, fp, j)
		i = j
	}
}

// averagePrecision is the area under the precision–recall curve, stepwise,
// with tied scores taken as one step.
func averagePrecision(xs []Labelled) float64 {
	s := append([]Labelled(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Score > s[j].Score })
	var total float64
	for _, x := range s {
		if x.Attack {
			total++
		}
	}
	if total == 0 {
		return math.NaN()
	}
	var ap, prevRecall float64
	flaggedDownTo(s, func(tp, fp, _ int) {
		recall := float64(tp) / total
		ap += (recall - prevRecall) * float64(tp) / float64(tp+fp)
		prevRecall = recall
	})
	return ap
}
