package source

import "io"

// readPcapFile reads a capture for ReadFile.
func readPcapFile(r io.Reader, name string, opt FileOptions, emit func(*Record) error, bad func(Problem)) error {
	_, err := ReadPcap(r, name, PcapOptions{Overrides: opt.Overrides, Identities: opt.Identities,
		MaxBufferedBytes: opt.Limits.MaxCaptureBytes, MaxPendingBytes: opt.Limits.MaxPendingBytes, Early: opt.Limits.Hits}, emit, bad)
	return err
}
