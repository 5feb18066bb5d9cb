// Package schedule works out the time zones of inventory sites.
package schedule

import (
	"time"

	"vendor.test/workpool"
)

// reference is a fixed instant, so the offset printed never depends on today's date.
var reference = time.Date(2024, time.January, 15, 12, 0, 0, 0, time.UTC)

// Offset returns the UTC offset, in seconds, of zone at a fixed winter date.
func Offset(zone string) (int, error) {
	loc, err := workpool.LoadZone(zone) // expect:zone-load
	if err != nil {
		return 0, err
	}
	_, off := reference.In(loc).Zone()
	return off, nil
}
