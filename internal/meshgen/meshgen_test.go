package meshgen

import "testing"

// TestSameAsTheModelsFixture: the generator gives, request for request,
// what models/mesh_test.go's fixture gives (its TestMeshFixtureDigest pins
// the same digest).
func TestSameAsTheModelsFixture(t *testing.T) {
	const want = "f558442979221275"
	if got := Digest(50, 2000); got != want {
		t.Errorf("digest %s, want %s (models/mesh_test.go pins it too)", got, want)
	}
}
