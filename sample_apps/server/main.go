// server: a long-running HTTP server on 127.0.0.1 (random port) for attach/detach tests.
//
// Hidden dependencies exercised: per request to /lookup[?uid=N], one os/user lookup (cgo:
// getpwuid_r -> /etc/nsswitch.conf, /etc/passwd; pure: /etc/passwd), on whatever thread
// serves it; per request to /dns?name=NAME, one net.Resolver.LookupHost (Go's resolver
// with a Debian-like nsswitch.conf: /etc/hosts, then a UDP query to the nameserver of
// /etc/resolv.conf; run it only where resolv.conf names 127.0.0.1 and the loopback
// responder answers); per request to /proxy?to=HOST:PORT, one GET of http://HOST:PORT/
// relayed as a reverse proxy would (a connect to the upstream, after a lookup of HOST when
// it is a name: /etc/hosts for localhost); / answers "ok" without touching any file. Readiness handshake: with
// --ready-file PATH (a FIFO made by the test) it writes "ready <port>\n" there once it
// listens. It serves until SIGTERM or SIGINT, then shuts down and exits 0. --timeout bounds
// its life (default 120 s; exit 3 if no signal came).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	readyFile := flag.String("ready-file", "", "write \"ready <port>\" to this path (FIFO)")
	timeout := flag.Duration("timeout", 120*time.Second, "exit 3 after this long")
	flag.Parse()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/lookup", func(w http.ResponseWriter, r *http.Request) {
		uid := r.URL.Query().Get("uid")
		if uid == "" {
			uid = "0"
		}
		// LookupId of the process's own uid is answered from os/user's Current() cache
		// after its first call; any other uid reaches getpwuid_r (or /etc/passwd) each time.
		u, err := user.LookupId(uid) // expect:server-lookupid
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, u.Username)
	})
	mux.HandleFunc("/dns", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		addrs, err := net.DefaultResolver.LookupHost(r.Context(), name) // expect:server-dns
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		sort.Strings(addrs)
		fmt.Fprintln(w, strings.Join(addrs, " "))
	})
	// a fresh connection per request, as a proxy under load opens them (no keep-alive pool)
	upstream := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true}}
	mux.HandleFunc("/proxy", func(w http.ResponseWriter, r *http.Request) {
		resp, err := upstream.Get("http://" + r.URL.Query().Get("to") + "/") // expect:server-proxy
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	port := ln.Addr().(*net.TCPAddr).Port
	fmt.Printf("server: listening on 127.0.0.1:%d\n", port)
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, []byte(fmt.Sprintf("ready %d\n", port)), 0o600); err != nil {
			fmt.Println("ready-file:", err)
			os.Exit(1)
		}
	}
	select {
	case s := <-sigs:
		fmt.Println("server: got", s)
	case err := <-served:
		fmt.Println("server: serve failed:", err)
		os.Exit(1)
	case <-time.After(*timeout):
		fmt.Println("server: timed out without a signal")
		os.Exit(3)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Println("server: shutdown:", err)
		os.Exit(1)
	}
	fmt.Println("server: stopped")
}
