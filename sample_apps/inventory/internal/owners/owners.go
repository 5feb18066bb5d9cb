// Package owners names the owners of inventory items.
package owners

import (
	"fmt"

	"vendor.test/workpool"
)

// Describe returns "name (uid)" for the user with id uid.
func Describe(uid string) (string, error) {
	u, err := workpool.LookupUser(uid) // expect:owner-lookup
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (%s)", u.Username, u.Uid), nil
}
