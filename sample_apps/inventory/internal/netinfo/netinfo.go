// Package netinfo resolves the hosts of inventory sites.
package netinfo

import (
	"time"

	"vendor.test/workpool"
)

// Addresses resolves host through the worker pool.
func Addresses(host string) ([]string, error) {
	return workpool.ResolveHost(host, 10*time.Second) // expect:resolve
}
