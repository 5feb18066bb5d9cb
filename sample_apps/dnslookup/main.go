// dnslookup: name-service lookups through package net.
//
// Hidden dependencies exercised: net.LookupHost and net.LookupAddr read /etc/nsswitch.conf,
// /etc/resolv.conf and /etc/hosts (Go resolver), or go through glibc getaddrinfo/getnameinfo
// (cgo resolver: also /etc/host.conf, /etc/gai.conf, libnss_* modules, UDP connect probes).
// net.LookupPort uses getaddrinfo whenever the cgo resolver is compiled in (reads
// /etc/services through glibc), else Go's own /etc/services parser.
// -svc also resolves a name only the loopback responder knows (UDP/TCP to the nameserver of
// resolv.conf): run that only inside a network namespace whose resolv.conf names 127.0.0.1.
// -ctx makes every lookup carry a context deadline: the cgo resolver then runs its C call in
// a helper goroutine (net.doBlockingWithCtx).
//
// Usage: dnslookup [-svc] [-svc-name NAME] [-ctx] [host [addr [network service]]]
// Defaults: localhost 127.0.0.1 tcp http. CGOTRACE_DNS_SVC=1 in the environment acts as -svc.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	svc := flag.Bool("svc", os.Getenv("CGOTRACE_DNS_SVC") == "1",
		"also resolve -svc-name (needs the loopback DNS responder)")
	svcName := flag.String("svc-name", "svc.cgotrace.test", "name only the responder knows")
	withCtx := flag.Bool("ctx", false, "use a context with a 5 s deadline for every lookup")
	flag.Parse()
	args := append(flag.Args(), "", "", "", "")
	host, addr, network, service := or(args[0], "localhost"), or(args[1], "127.0.0.1"),
		or(args[2], "tcp"), or(args[3], "http")

	ctx := context.Background()
	if *withCtx {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	r := net.DefaultResolver
	failed := false
	report := func(what string, vals []string, err error) {
		if err != nil {
			failed = true
			fmt.Printf("%s: error: %v\n", what, err)
			return
		}
		sort.Strings(vals)
		fmt.Printf("%s: %s\n", what, strings.Join(vals, " "))
	}

	var addrs, names []string
	var port int
	var err error
	if *withCtx {
		addrs, err = r.LookupHost(ctx, host) // expect:ctx-lookuphost
	} else {
		addrs, err = net.LookupHost(host) // expect:lookuphost
	}
	report("LookupHost("+host+")", addrs, err)

	if *withCtx {
		names, err = r.LookupAddr(ctx, addr) // expect:ctx-lookupaddr
	} else {
		names, err = net.LookupAddr(addr) // expect:lookupaddr
	}
	report("LookupAddr("+addr+")", names, err)

	if *withCtx {
		port, err = r.LookupPort(ctx, network, service) // expect:ctx-lookupport
	} else {
		port, err = net.LookupPort(network, service) // expect:lookupport
	}
	report("LookupPort("+network+"/"+service+")", []string{fmt.Sprint(port)}, err)

	if *svc {
		addrs, err = r.LookupHost(ctx, *svcName) // expect:svc-lookuphost
		report("LookupHost("+*svcName+")", addrs, err)
		if err == nil && len(addrs) > 0 {
			names, err = r.LookupAddr(ctx, addrs[0]) // expect:svc-lookupaddr
			report("LookupAddr("+addrs[0]+")", names, err)
		}
	}
	if failed {
		os.Exit(1)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
