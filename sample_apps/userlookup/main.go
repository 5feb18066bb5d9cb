// userlookup: os/user lookups. With cgo these go through glibc's getpwuid_r and friends,
// which read /etc/nsswitch.conf and dlopen NSS modules; pure Go reads /etc/passwd itself.
package main

import (
	"fmt"
	"os"
	"os/user"
)

func main() {
	u, err := user.LookupId("0")
	fmt.Println("LookupId(0):", name(u), err)

	_, err = user.LookupId("4242424")
	fmt.Println("LookupId(4242424):", err)

	cur, err := user.Current()
	fmt.Println("Current:", name(cur), err)

	g, err := user.LookupGroup("root")
	if err == nil {
		fmt.Println("LookupGroup(root):", g.Gid)
	} else {
		fmt.Println("LookupGroup(root):", err)
	}
	os.Exit(0)
}

func name(u *user.User) string {
	if u == nil {
		return "<nil>"
	}
	return u.Username
}
