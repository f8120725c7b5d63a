package source

import (
	"errors"
	"io"
)

// readPcapFile is replaced when the pcap reader lands.
func readPcapFile(r io.Reader, name string, opt FileOptions, emit func(*Record) error, bad func(Problem)) error {
	return errors.New(name + ": pcap captures are not supported yet")
}
