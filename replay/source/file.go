package source

import (
	"bufio"
	"fmt"
	"path/filepath"
)

// FileOptions configure ReadFile.
type FileOptions struct {
	// Format is one of the Format* names, or "" / "auto" to detect it.
	Format    string
	Overrides Overrides
	// Identities maps addresses to workload names, for captures.
	Identities map[string]string
	// Limits bound what one entry may make a reader hold.
	Limits Limits
}

// Formats lists the formats ReadFile reads.
func Formats() []string {
	return []string{FormatJSONL, FormatHAR, FormatRaw, FormatJaegerCSV, FormatJaegerJSON, FormatPcap}
}

// ReadFile reads one traffic file of any supported format (gzip-compressed
// or not), calling emit for each request and bad for each malformed entry.
// Positions name the file by its base name.
func ReadFile(path string, opt FileOptions, emit func(*Record) error, bad func(Problem)) error {
	rc, err := Open(path)
	if err != nil {
		return err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64*1024)
	head, _ := br.Peek(SniffLen)
	format := opt.Format
	if format == "" || format == "auto" {
		if format = Format(path, head); format == "" {
			return fmt.Errorf("%s: unknown traffic format (give one of %v)", path, Formats())
		}
	}
	name := filepath.Base(path)
	switch format {
	case FormatJSONL:
		return ReadJSONLWith(br, name, opt.Overrides, opt.Limits, emit, bad)
	case FormatHAR:
		return ReadHARWith(br, name, opt.Overrides, opt.Limits, emit, bad)
	case FormatRaw:
		return ReadRawHTTP(br, name, opt.Overrides, emit, bad)
	case FormatJaegerCSV:
		_, err := ReadJaegerCSV(br, name, opt.Overrides, emit, bad)
		return err
	case FormatJaegerJSON:
		_, err := ReadJaegerJSONWith(br, name, opt.Overrides, opt.Limits, emit, bad)
		return err
	case FormatPcap:
		return readPcapFile(br, name, opt, emit, bad)
	}
	return fmt.Errorf("%s: format %q is not one of %v", path, format, Formats())
}
