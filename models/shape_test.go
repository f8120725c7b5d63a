package models

import "testing"

// A shape keeps every byte's class and the length: what the transition and
// length models learn from a value, they learn from its shape.
func TestShapesKeepClassesAndLength(t *testing.T) {
	for _, v := range []string{"Go-http-client/1.1", "1' OR '1'='1 --", "<script>x</script>", "ünï\x00\x7f"} {
		s := ShapeValue(v)
		if len(s) != len(v) {
			t.Fatalf("%q: shape %q changed the length", v, s)
		}
		for i := range v {
			if ClassOf(v[i]) != ClassOf(s[i]) {
				t.Errorf("%q: byte %d class %d shaped to class %d", v, i, ClassOf(v[i]), ClassOf(s[i]))
			}
		}
	}
	var a, b paramScratch
	a.addQuery([]byte("q=a%27b+c&n=12"), false)
	b.addQuery([]byte(ShapeQuery("q=a%27b+c&n=12")), false)
	if a.n != 2 || b.n != 2 {
		t.Fatalf("params %d and %d", a.n, b.n)
	}
	for i := 0; i < 2; i++ {
		va, vb := a.params[i].value, b.params[i].value
		if string(a.params[i].name) != string(b.params[i].name) || len(va) != len(vb) {
			t.Fatalf("param %d: %q=%q vs %q=%q", i, a.params[i].name, va, b.params[i].name, vb)
		}
		for j := range va {
			if ClassOf(va[j]) != ClassOf(vb[j]) {
				t.Errorf("param %d byte %d: class changed", i, j)
			}
		}
	}
}
