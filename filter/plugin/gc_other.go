//go:build !wasip1

package plugin

// collector schedules garbage collection in the filter compiled to
// WebAssembly (gc_wasip1.go); natively, as in tests, the Go runtime's own
// concurrent collector needs no help.
type collector struct{}

func (*collector) collect(string) {}
func (*collector) tick()          {}
func (*collector) streamDone()    {}
