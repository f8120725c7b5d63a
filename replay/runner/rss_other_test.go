//go:build !linux

package runner

// peakRSSMB is not measured off Linux.
func peakRSSMB() float64 { return 0 }
