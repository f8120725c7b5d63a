package pin

import (
	"errors"
	"sort"
)

// joinSorted joins errors in a stable order (map iteration is random).
func joinSorted(errs []error) error {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}
