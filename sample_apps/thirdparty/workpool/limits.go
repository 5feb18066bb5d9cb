package workpool

import "os"

// LimitsFile is probed by this package's init: code run before main with no application
// frame on the stack (cgotrace says "init of vendor.test/workpool").
const LimitsFile = "/etc/workpool/limits.conf"

// Limited says whether LimitsFile existed at start-up.
var Limited bool

func init() {
	if _, err := os.Stat(LimitsFile); err == nil {
		Limited = true
	}
}
