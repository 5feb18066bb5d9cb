// inventory: a module shaped like a real program (cmd/, internal/, a third-party module via replace) doing user, DNS, zoneinfo and CA lookups through a helper's goroutines.
//
// Hidden dependencies: /etc/passwd (+ nsswitch.conf, NSS modules with cgo), /etc/resolv.conf,
// /etc/hosts and port 53, /usr/share/zoneinfo/<zone>, the CA bundle paths probed by an init,
// and /etc/workpool/limits.conf probed by the third-party module's own init.
package main

import (
	"flag"
	"fmt"
	"os"

	"corp.test/inventory/internal/certs"
	"corp.test/inventory/internal/netinfo"
	"corp.test/inventory/internal/owners"
	"corp.test/inventory/internal/schedule"
)

func main() {
	uid := flag.String("uid", "1", "user id whose owner to describe")
	zone := flag.String("zone", "Europe/Paris", "time zone to load")
	host := flag.String("host", "svc.cgotrace.test", "host name to resolve")
	flag.Parse()
	failed := false
	fmt.Println("ca bundle:", certs.Bundle())
	if name, err := owners.Describe(*uid); err != nil {
		fmt.Println("owner:", err)
		failed = true
	} else {
		fmt.Println("owner:", name)
	}
	if off, err := schedule.Offset(*zone); err != nil {
		fmt.Println("zone:", err)
		failed = true
	} else {
		fmt.Println("zone:", *zone, off)
	}
	if addrs, err := netinfo.Addresses(*host); err != nil {
		fmt.Println("host:", err)
		failed = true
	} else {
		fmt.Println("host:", *host, addrs)
	}
	if failed {
		os.Exit(1)
	}
}
