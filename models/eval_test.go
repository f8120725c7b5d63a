package models

import (
	"math"
	"testing"
)

func TestEvaluatePerfectAndRandom(t *testing.T) {
	var perfect []Labelled
	for i := 0; i < 1000; i++ {
		perfect = append(perfect, Labelled{Score: float64(i) / 2000})
	}
	for i := 0; i < 100; i++ {
		perfect = append(perfect, Labelled{Score: 0.9 + float64(i)/10000, Attack: true, Type: "sqli"})
	}
	e := Evaluate(perfect, 0.5)
	if e.ROCAUC != 1 || e.PRAUC != 1 || e.TPRAt01 != 1 || e.TPRAt1 != 1 {
		t.Errorf("perfect separation: %+v", e)
	}
	if e.AtThreshold != (Confusion{TP: 100, TN: 1000}) {
		t.Errorf("confusion %+v", e.AtThreshold)
	}
	if e.AtThreshold.F1() != 1 || e.BestF1 != 1 || !(e.BestCut >= 999.0/2000 && e.BestCut < 0.9) {
		t.Errorf("perfect separation: F1 %v, best %v at %v", e.AtThreshold.F1(), e.BestF1, e.BestCut)
	}
	// Every example an attack: the best cut flags them all, and is a
	// number JSON can carry.
	if e := Evaluate([]Labelled{{Score: 0.2, Attack: true}, {Score: 0.7, Attack: true}}, 0.5); e.BestF1 != 1 || !(e.BestCut < 0.2) || math.IsInf(e.BestCut, 0) {
		t.Errorf("all attacks: best F1 %v at %v", e.BestF1, e.BestCut)
	}
	// All tied: AUC one half, nothing caught at a low false-positive rate.
	var tied []Labelled
	for i := 0; i < 500; i++ {
		tied = append(tied, Labelled{Score: 0.3, Attack: i%5 == 0, Type: "x"})
	}
	e = Evaluate(tied, 0.5)
	if e.ROCAUC != 0.5 || e.TPRAt01 != 0 {
		t.Errorf("tied: AUC %v TPR@0.1%% %v", e.ROCAUC, e.TPRAt01)
	}
	if math.Abs(e.PRAUC-0.2) > 1e-9 {
		t.Errorf("tied PR AUC %v, want the base rate 0.2", e.PRAUC)
	}
}

func TestEvaluateKnownValues(t *testing.T) {
	// Normal 0.1..0.4, attacks 0.35 and 0.9: one of 4×2 pairs misordered.
	xs := []Labelled{{Score: 0.1}, {Score: 0.2}, {Score: 0.3}, {Score: 0.4},
		{Score: 0.35, Attack: true, Type: "a"}, {Score: 0.9, Attack: true, Type: "b"}}
	e := Evaluate(xs, 0.3)
	if math.Abs(e.ROCAUC-7.0/8) > 1e-12 {
		t.Errorf("AUC %v, want 7/8", e.ROCAUC)
	}
	// AP: ranks 0.9(A) p=1, 0.4(N), 0.35(A) p=2/3 → (1 + 2/3)/2.
	if math.Abs(e.PRAUC-(1+2.0/3)/2) > 1e-12 {
		t.Errorf("AP %v", e.PRAUC)
	}
	if e.AtThreshold != (Confusion{TP: 2, FP: 1, TN: 3}) {
		t.Errorf("confusion %+v", e.AtThreshold)
	}
	if len(e.PerType) != 2 || e.PerType[0].Type != "a" || e.PerType[0].Caught != 1 {
		t.Errorf("per type %+v", e.PerType)
	}
	// F1 at 0.3: TP 2, FP 1, FN 0 → 4/5. Cuts: 0.9 alone 2/3, down to 0.4
	// 1/2, down to 0.35 4/5 (the best, just above 0.3).
	if math.Abs(e.AtThreshold.F1()-0.8) > 1e-12 || math.Abs(e.BestF1-0.8) > 1e-12 || e.BestCut != 0.3 {
		t.Errorf("F1 %v, best %v at %v; want 0.8, 0.8 at 0.3", e.AtThreshold.F1(), e.BestF1, e.BestCut)
	}
	// With 4 normal examples, 1 % FPR allows none: threshold = max normal 0.4.
	if e.TPRAt1 != 0.5 {
		t.Errorf("TPR@1%% %v, want 0.5", e.TPRAt1)
	}
}
