package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestServeBadWasmPlugin: a -wasmplugin that is not namespace/name stops
// serve before anything starts, with a usage error.
func TestServeBadWasmPlugin(t *testing.T) {
	err := Main([]string{"serve", "-wasmplugin", "meshward", "-collector-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, &bytes.Buffer{}, &bytes.Buffer{})
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), `-wasmplugin "meshward": want namespace/name`) {
		t.Errorf("serve -wasmplugin meshward: %v, want a usage error", err)
	}
}
