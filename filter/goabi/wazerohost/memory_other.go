//go:build !wasip1 && !linux

package wazerohost

import "context"

// withMemory keeps wazero's default linear memory where mappings are not
// available.
func withMemory(ctx context.Context) context.Context { return ctx }
